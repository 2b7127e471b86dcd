"""What every command shares: user errors as `error: ...` with exit 1, JSON output."""

from __future__ import annotations

import json
import sys

import click

from edgetune.errors import EdgetuneError


class UserError(click.ClickException):
    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class ErrorHandlingGroup(click.Group):
    """Turns EdgetuneError (a user mistake) into a one-line message and exit 1.

    Any other exception is a bug and keeps its traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgetuneError as e:
            raise UserError(str(e)) from None


def int_list(value: str | None, example: str) -> list[int] | None:
    """A comma-separated list of positive integers from an option (None stays None)."""
    if value is None:
        return None
    try:
        out = [int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give whole numbers separated by commas, e.g. {example}") from None
    if min(out) < 1:
        raise click.BadParameter(f"{value!r}: every number must be 1 or more, e.g. {example}")
    return out


def echo_json(obj) -> None:
    """One JSON object as the last line of stdout (machine-readable output)."""
    click.echo(json.dumps(obj, default=_jsonable, sort_keys=False))


def _jsonable(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def progress_enabled() -> bool:
    """Progress bars on a terminal, quiet in pipes and CI logs."""
    return sys.stderr.isatty()
