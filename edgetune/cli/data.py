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
@click.option("--out", type=click.Path(path_type=str),
              help="Folder to write [default: $EDGETUNE_HOME/corpus/TASK, EDGETUNE_HOME=~/.cache/edgetune].")
@click.option("--task", type=click.Choice(["commands", "digits", "vowels", "all", "instruments"]),
              default="commands", show_default=True,
              help="Spoken words, or instrument families (notes and phrases from a SoundFont).")
@click.option("--clips-per-word", default=300, show_default=True, type=click.IntRange(1),
              help="Clips of each word; above 300, more speakers in proportion (600: twice the voices).")
@click.option("--unknown-clips", type=click.IntRange(1),
              help="Clips of other words for `_unknown_` [default: --clips-per-word]; it holds "
                   "dozens of words, so a larger share helps it be recognised.")
@click.option("--near-miss-clips", default=0, show_default=True, type=click.IntRange(0),
              help="More `_unknown_` clips, of words that sound like the task's words (tree for "
                   "three, floor for four): fewer of them heard as a word on a stream.")
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", default=None, type=click.IntRange(1), help="Processes [default: all cores].")
@click.option("--engines", default=None,
              help="Engine mix, NAME=WEIGHT,... or plain names for equal shares; engines: espeak, piper, "
                   "flite, kokoro, mbrola, rhvoice, pico; one not installed is skipped [default: "
                   "espeak=0.3,piper=0.3,flite=0.15,mbrola=0.25].")
@click.option("--soundfont", type=click.Path(path_type=str),
              help="General MIDI .sf2 for --task instruments [default: the one pretty-midi ships].")
@click.option("--json", "as_json", is_flag=True)
def synth(out, task, clips_per_word, unknown_clips, near_miss_clips, seed, workers, engines, soundfont,
          as_json) -> None:
    """Build the built-in synthetic corpus (no downloads) in the Speech Commands layout.

    Re-running completes or reuses what is there."""
    from edgetune.data.synth.corpus import DEFAULT_ENGINES, build_corpus
    from edgetune.paths import corpus_dir

    out = out or str(corpus_dir(task))
    summary = build_corpus(out, task, clips_per_word=clips_per_word, seed=seed, workers=workers,
                           engines=engines or DEFAULT_ENGINES, progress=progress_enabled(), soundfont=soundfont,
                           unknown_clips=unknown_clips, near_miss_clips=near_miss_clips)
    if as_json:
        echo_json(summary)
    else:
        who = "program/key pairs" if task == "instruments" else "voices"
        click.echo(f"wrote {out}: {summary.get('clips', '?')} clips, "
                   f"{summary.get('speakers', '?')} {who} ({task}); next: edgetune data check {out}")


@data.command()
@click.argument("source", type=click.Path(path_type=str))
@click.option("--split", type=click.Choice(["train", "val", "test", "all"]), default="test", show_default=True)
@click.option("--minutes", default=30.0, show_default=True, type=click.FloatRange(0.1))
@click.option("--seed", default=0, show_default=True)
@click.option("--gap", nargs=2, type=float, default=(2.0, 6.0), show_default=True,
              help="Seconds of background between words (uniform range).")
@click.option("--noise-rms", default=0.01, show_default=True, type=float)
@click.option("--out", required=True, type=click.Path(path_type=str),
              help="Stream wav (.wav added when it has no extension); its truth CSV is written "
                   "beside it (.csv).")
@click.option("--unknown-share", type=click.FloatRange(0, 1), default=None,
              help="Share of `_unknown_` words [default: as the split has them]; e.g. a "
                   "validation stream from a corpus with many other words, at the test "
                   "stream's share.")
@click.option("--json", "as_json", is_flag=True)
def stream(source, split, minutes, seed, gap, noise_rms, out, unknown_share, as_json) -> None:
    """Build a long labelled test stream (wav + truth CSV) from a dataset's clips."""
    from pathlib import Path

    from edgetune.runtime.streameval import make_stream

    if not Path(out).suffix:
        out += ".wav"  # `--out streams/val` means streams/val.wav (+ streams/val.csv)
    truth = str(Path(out).with_suffix(".csv"))
    summary = make_stream(source, split=split, minutes=minutes, seed=seed, out_wav=out,
                          out_csv=truth, gap_s=tuple(gap), noise_rms=noise_rms,
                          unknown_share=unknown_share)
    if as_json:
        echo_json(summary)
    else:
        click.echo(f"wrote {out} and {truth}: {summary['words']} words "
                   f"({summary['unknown_words']} of them `_unknown_`) in "
                   f"{summary['seconds'] / 60:.1f} min; next: "
                   f"edgetune stream-eval MODEL.onnx --stream {out} --truth {truth}")


COMMANDS: list[click.Command] = [data]
