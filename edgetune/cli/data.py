"""`edgetune data ...`: build, check and stream datasets."""

from __future__ import annotations

import click

from edgetune.cli.common import echo_json, progress_enabled


@click.group()
def data() -> None:
    """Datasets: the built-in corpus, checks, long test streams."""


@data.command()
@click.argument("source", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def check(source: str, as_json: bool) -> None:
    """Check a dataset folder (Speech Commands layout) or CSV manifest.

    Names every unusable file and why, the files converted on load, class counts
    per split, sample rates and durations, and speakers leaking between splits.
    Exits 1 when there are errors."""
    from edgetune.data.check import check_dataset, format_check

    report = check_dataset(source, progress=progress_enabled() and not as_json)
    if as_json:
        echo_json(report)
    else:
        click.echo(format_check(report))
    if not report["ok"]:
        raise SystemExit(1)


@data.command()
@click.option("--out", required=True, type=click.Path(path_type=str), help="Folder to write.")
@click.option("--task", type=click.Choice(["commands", "digits", "vowels", "all"]), default="commands",
              show_default=True)
@click.option("--clips-per-word", default=300, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", default=None, type=click.IntRange(1), help="Processes [default: all cores].")
@click.option("--engines", default="espeak,piper", show_default=True,
              help="Comma-separated synthesis engines.")
@click.option("--json", "as_json", is_flag=True)
def synth(out, task, clips_per_word, seed, workers, engines, as_json) -> None:
    """Build the built-in synthetic corpus (no downloads) in the Speech Commands layout."""
    from edgetune.data.synth.corpus import build_corpus

    summary = build_corpus(out, task, clips_per_word=clips_per_word, seed=seed, workers=workers,
                           engines=tuple(e.strip() for e in engines.split(",") if e.strip()),
                           progress=progress_enabled())
    if as_json:
        echo_json(summary)
    else:
        click.echo(f"wrote {out}: {summary.get('clips', '?')} clips, "
                   f"{summary.get('speakers', '?')} voices ({task}); next: edgetune data check {out}")


COMMANDS: list[click.Command] = [data]
