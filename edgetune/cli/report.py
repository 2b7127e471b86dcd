"""report commands (host side, matplotlib): report, explain."""

from __future__ import annotations

import click

from edgetune.cli.common import echo_json


@click.command("report")
@click.argument("run", type=click.Path(path_type=str))
@click.option("--out", type=click.Path(path_type=str), default=None,
              help="Folder for report.html, the PNGs and report.json [default: RUN/report].")
@click.option("--stream-seconds", type=click.FloatRange(1), default=120.0, show_default=True,
              help="How much of the stream the detection timeline shows.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json as one JSON object.")
def report(run, out, stream_seconds, as_json) -> None:
    """One self-contained HTML page about RUN: stages, training, accuracy, budgets, stream.

    Shows what the run folder holds and lists what is missing with the command
    that makes it. Images are embedded, so the page reads offline."""
    from edgetune.report.report import build_report, format_summary

    r = build_report(run, out, stream_seconds=stream_seconds)
    if as_json:
        echo_json(r)
    else:
        click.echo(format_summary(r))


@click.command("explain")
@click.argument("model", type=click.Path(path_type=str))
@click.argument("clip", type=click.Path(path_type=str))
@click.option("--out", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Saliency figure (PNG) [default: CLIP-saliency.png beside the clip].")
@click.option("--top", type=click.IntRange(1), default=5, show_default=True,
              help="How many classes to show.")
@click.option("--method", type=click.Choice(["auto", "gradient", "occlusion"]), default="auto",
              show_default=True,
              help="auto: gradient for a .pt checkpoint, occlusion for an .onnx export.")
@click.option("--json", "as_json", is_flag=True, help="Print the top classes as one JSON object.")
def explain(model, clip, out, top, method, as_json) -> None:
    """Top classes of CLIP under MODEL (.pt or .onnx) and which part of its log-mel mattered."""
    from pathlib import Path

    from edgetune.report.explain import explain as run_explain
    from edgetune.report.explain import public, save_explanation

    r = run_explain(model, clip, top=top, method=method)
    if out is None:
        out = str(Path(clip).with_name(Path(clip).stem + "-saliency.png"))
    png = save_explanation(r, out)
    if as_json:
        echo_json(public(r, png))
        return
    width = max(len(t["label"]) for t in r["top"])
    for t in r["top"]:
        click.echo(f"{t['label']:<{width}}  {100 * t['probability']:6.2f}%")
    click.echo(f"saliency ({r['method']}) -> {png}")


COMMANDS = [report, explain]
