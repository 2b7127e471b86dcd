"""The `edgetune` command line: parses, calls one function, prints. No logic here.

Commands live in one module per side (data, host, device) and import their
heavy dependencies inside the command, so `edgetune listen` starts fast on a
board that has only the base install.
"""

from __future__ import annotations

import warnings

import click

from edgetune import __version__
from edgetune.cli import data as _data
from edgetune.cli import device as _device
from edgetune.cli import host as _host
from edgetune.cli import merge as _merge
from edgetune.cli import report as _report
from edgetune.cli.common import ErrorHandlingGroup


@click.group(cls=ErrorHandlingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgetune")
def cli() -> None:
    """Fine-tune, compress and deploy small sound recognisers on edge devices.

    \b
    Pipeline:  data synth -> finetune -> compress -> export -> verify / bench / listen
    """


for module in (_data, _host, _merge, _device, _report):
    for command in module.COMMANDS:
        cli.add_command(command)


def main() -> None:
    # torch 2.11 warns from its own pytree code each time a captured (QAT) graph is copied:
    # nothing a user can act on, printed on every compress and export
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    cli(prog_name="edgetune")
