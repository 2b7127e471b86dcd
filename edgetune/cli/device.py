"""device commands: verify, devices, bench, listen (and its --check), record, stream-eval.

Each command imports its edgetune.runtime module inside the function (no torch, ever),
calls one function and prints. User mistakes are EdgetuneError -> `error: ...`, exit 1.
"""

from __future__ import annotations

import json
import sys

import click

from edgetune.cli.common import echo_json, progress_enabled

_SPLITS = click.Choice(["train", "val", "test", "all"])


def _stream_options(f):
    for opt in reversed(
        [
            click.option(
                "--hop-ms",
                type=float,
                default=None,
                help="Inference every N ms (default: the model's).",
            ),
            click.option(
                "--average-ms", type=float, default=None, help="Posterior smoothing window in ms."
            ),
            click.option(
                "--threshold",
                type=float,
                default=None,
                help="Smoothed confidence needed to report (0-1).",
            ),
            click.option(
                "--suppress-ms",
                type=float,
                default=None,
                help="Refractory time after a detection in ms.",
            ),
        ]
    ):
        f = opt(f)
    return f


def _limit_options(f):
    """Input limits (DESIGN: off by default), for verify and listen."""
    f = click.option(
        "--min-confidence",
        type=click.FloatRange(0, 1),
        default=None,
        help="Answers less sure than this are 'unknown', not a guess (verify: counted wrong; "
        "listen: not reported).",
    )(f)
    return click.option(
        "--min-level",
        type=click.FloatRange(max=0),
        default=None,
        help="dBFS (e.g. -50): input whose loudest 100 ms is quieter is silence, not classified.",
    )(f)


class _TerminalUI:
    """Prompts, countdown and a level meter on stderr; keep/retake/quit keys when interactive."""

    def __init__(self, interactive: bool):
        self.interactive = interactive
        self.meter = sys.stderr.isatty()

    def prompt(self, label, index, total):
        click.echo(f"({index}/{total}) next: {label}", err=True)

    def countdown(self, k):
        click.echo(f"  {k}...", err=True)

    def speak(self, label, seconds):
        click.echo(f"say: {label}", err=True)
        sys.stderr.flush()

    def level(self, db):
        if self.meter:
            bars = max(0, min(30, round((db + 60) / 2)))  # -60..0 dBFS over 30 cells
            click.echo(f"\r  [{'#' * bars:<30}] {db:6.1f} dBFS", err=True, nl=False)

    def note(self, text):
        if self.meter:
            click.echo("\r" + " " * 48 + "\r", err=True, nl=False)
        click.echo(f"  {text}", err=True)

    def decide(self, take):
        u = take.utterance
        self.note(
            f"{take.label}: {take.seconds:.2f} s of voice at {u.level_db:.0f} dBFS "
            f"(room {u.floor_db:.0f} dBFS)"
        )
        for w in take.warnings():
            self.note(f"warning: {w}")
        if not self.interactive:
            return "keep"
        click.echo("  [Enter] keep, r retake, q quit: ", err=True, nl=False)
        key = click.getchar()
        click.echo("", err=True)
        return {"r": "retake", "q": "quit"}.get(key.lower(), "keep")


def _capture(file_, stdin, rate, input_device, sample_rate=16000):
    from edgetune.runtime.listen import read_stdin
    from edgetune.runtime.record import open_capture

    return open_capture(
        file=file_,
        stdin=read_stdin() if stdin == "-" else None,
        rate=rate,
        device=input_device,
        sample_rate=sample_rate,
    )


@click.command("verify")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--data",
    required=True,
    type=click.Path(),
    help="Folder of <label>/<clip>.wav, or a CSV manifest.",
)
@click.option("--split", type=_SPLITS, default="test", show_default=True)
@click.option(
    "--min-accuracy",
    type=click.FloatRange(0, 1),
    default=None,
    help="Goal (default: the model's, else 0.90).",
)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=None,
    help="onnxruntime threads (default: all cores).",
)
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None, help="Write the JSON report here."
)
@click.option(
    "--max-seconds",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Skip (and list) clips longer than this.",
)
@_limit_options
@click.option("--head", help="Which head of a merged model (`edgetune merge`) to score.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def verify_cmd(
    model,
    data,
    split,
    min_accuracy,
    batch_size,
    threads,
    out,
    max_seconds,
    min_level,
    min_confidence,
    head,
    as_json,
):
    """Score an exported MODEL on a labelled split; exit 1 below the accuracy goal."""
    from edgetune.files import write_json_atomic
    from edgetune.runtime.verify import GoalNotMet, failure_message, format_report, verify

    report = verify(
        model,
        data,
        split,
        min_accuracy,
        batch_size,
        threads,
        progress=progress_enabled(),
        min_level_db=min_level,
        min_confidence=min_confidence or 0.0,
        max_seconds=max_seconds,
        head=head,
    )
    if out:
        write_json_atomic(out, report)
    if as_json:
        echo_json(report)
    else:
        click.echo(format_report(report))
    if not report["passed"]:
        raise GoalNotMet(failure_message(report))


@click.command("devices")
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as one JSON object.")
def devices_cmd(as_json):
    """List the device profiles (devices/*.toml, or $EDGETUNE_DEVICES)."""
    from edgetune.runtime.devices import devices_dir, load_profiles

    profiles = load_profiles()
    if as_json:
        echo_json({name: p.to_dict() for name, p in profiles.items()})
        return
    click.echo(f"device profiles in {devices_dir()}")
    click.echo(
        f"{'name':<22} {'cores':>5} {'thr':>3} {'RAM MB':>7} {'model kB':>8} {'lat ms':>6} {'prec':>5}  description"
    )
    for name, p in profiles.items():
        click.echo(
            f"{name:<22} {p.cores:>5} {p.threads:>3} {p.memory_mb:>7} {p.model_size_budget_kb:>8g} "
            f"{p.latency_budget_ms:>6g} {p.precision:>5}  {p.description}"
        )


@click.command("bench")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--device", default=None, help="Device profile name (see `edgetune devices`) or a .toml file."
)
@click.option(
    "--seconds",
    type=click.FloatRange(1),
    default=60.0,
    show_default=True,
    help="Audio for the streaming run.",
)
@click.option(
    "--runs",
    type=click.IntRange(5),
    default=200,
    show_default=True,
    help="Timed inferences per setting.",
)
@click.option(
    "--threads", type=click.IntRange(1), default=None, help="Override the profile's thread count."
)
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None, help="Write the JSON result here."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def bench_cmd(model, device, seconds, runs, threads, out, as_json):
    """Front-end cost, latency, real-time factor and memory; with --device, exit 1 over a budget."""
    from edgetune.files import write_json_atomic
    from edgetune.runtime.bench import BudgetExceeded, bench, failure_message, format_bench

    r = bench(model, device=device, seconds=seconds, runs=runs, threads=threads)
    if out:
        write_json_atomic(out, r)
    if as_json:
        echo_json(r)
    else:
        click.echo(format_bench(r))
    if not r["passed"]:
        raise BudgetExceeded(failure_message(r))


@click.command("listen")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("stdin", required=False, metavar="[-]")
@click.option(
    "--file",
    "file_",
    type=click.Path(dir_okay=False),
    default=None,
    help="Play an audio file through the model.",
)
@click.option("--fast", is_flag=True, help="With --file: as fast as possible, not in real time.")
@click.option(
    "--rate",
    type=click.IntRange(1000),
    default=16000,
    show_default=True,
    help="Sample rate of PCM on stdin.",
)
@click.option("--input-device", default=None, help="Microphone index or name (see --list-devices).")
@click.option("--list-devices", is_flag=True, help="List input devices and exit.")
@click.option(
    "--seconds",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Stop after N s of audio (any source).",
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=None,
    help="onnxruntime threads (default: all cores).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per detection, then the summary."
)
@click.option(
    "--check",
    is_flag=True,
    help="Live acceptance test: say each prompted label; exit 1 below the goal.",
)
@click.option(
    "--count",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="With --check: prompts per label.",
)
@click.option("--labels", default=None, help="With --check: only these labels (a,e,o).")
@click.option(
    "--save",
    type=click.Path(file_okay=False),
    default=None,
    help="With --check: keep the utterances in this folder (as `edgetune record` writes).",
)
@click.option("--speaker", default="me", show_default=True, help="With --save: your speaker name.")
@click.option(
    "--window",
    type=click.FloatRange(1),
    default=2.0,
    show_default=True,
    help="With --check: seconds heard after each prompt.",
)
@click.option(
    "--countdown",
    type=click.IntRange(0),
    default=2,
    show_default=True,
    help="With --check: seconds before each prompt.",
)
@click.option(
    "--min-accuracy",
    type=click.FloatRange(0, 1),
    default=None,
    help="With --check: goal (default: the model's, else 0.90).",
)
@_stream_options
@_limit_options
def listen_cmd(
    model,
    stdin,
    file_,
    fast,
    rate,
    input_device,
    list_devices,
    seconds,
    threads,
    as_json,
    check,
    count,
    labels,
    save,
    speaker,
    window,
    countdown,
    min_accuracy,
    hop_ms,
    average_ms,
    threshold,
    suppress_ms,
    min_level,
    min_confidence,
):
    """Detect sounds live: microphone (default), --file X.wav, or `-` for raw s16le mono PCM on stdin.

    Prints one line per detection (time, label, confidence) and a summary at the end or on Ctrl-C.
    With --check, prompts you to say each label and scores what it hears against the model's goal."""
    from edgetune.runtime import listen as L
    from edgetune.runtime.model import load_model
    from edgetune.runtime.stream import StreamEngine

    if list_devices:
        devs = L.list_input_devices()
        if as_json:
            echo_json({"input_devices": devs})
        elif not devs:
            click.echo(
                "no input devices found (is a microphone plugged in, or a sound server running?)"
            )
        else:
            for d in devs:
                star = "*" if d["default"] else " "
                click.echo(
                    f"{star}{d['index']:>3}  {d['name']}  ({d['channels']} ch, {d['default_samplerate']:g} Hz)"
                )
        return
    if stdin not in (None, "-"):
        raise click.UsageError(
            f"unexpected argument {stdin!r}; use --file {stdin} for a file, or `-` for stdin"
        )
    if file_ and stdin:
        raise click.UsageError("give --file or `-`, not both")
    if fast and not file_:
        raise click.UsageError("--fast goes with --file")

    engine = StreamEngine(
        load_model(model, threads=threads),
        hop_ms=hop_ms,
        average_ms=average_ms,
        threshold=threshold,
        suppress_ms=suppress_ms,
        min_level_db=min_level,
        min_confidence=min_confidence,
    )
    if check:
        _check(
            engine,
            _capture(file_, stdin, rate, input_device, engine.rec.frontend.sample_rate),
            as_json,
            count=count,
            labels=[x.strip() for x in labels.split(",")] if labels else None,
            seconds=window,
            countdown=countdown,
            save=save,
            speaker=speaker,
            min_accuracy=min_accuracy,
        )
        return

    def show(d):
        if as_json:
            click.echo(json.dumps({"event": "detection", **d.to_dict()}))
        else:
            click.echo(f"{d.time_s:9.2f} s  {d.label:<16} {d.confidence:.3f}")
        sys.stdout.flush()

    def ready(source):
        click.echo(f"listening on {source} (Ctrl-C to stop)", err=True)

    if file_:
        summary = L.listen_file(
            engine, file_, fast=fast, on_detection=show, seconds=seconds, on_ready=ready
        )
    elif stdin == "-":
        summary = L.listen_pcm(
            engine, L.read_stdin(), rate=rate, on_detection=show, seconds=seconds
        )
    else:
        summary = L.listen_microphone(
            engine, device=input_device, seconds=seconds, on_detection=show, on_ready=ready
        )
    if as_json:
        echo_json({"event": "summary", **summary.to_dict()})
    else:
        click.echo(summary.format(), err=True)


def _check(engine, capture, as_json, **options):
    from edgetune.runtime.check import check, failure_message, format_check
    from edgetune.runtime.verify import GoalNotMet

    with capture:
        click.echo(f"checking {engine.rec.path} on {capture.source}", err=True)
        r = check(engine, capture, ui=_TerminalUI(interactive=False), **options)
    if as_json:
        echo_json(r)
    else:
        click.echo(format_check(r))
    if not r["passed"]:
        raise GoalNotMet(failure_message(r))


@click.command("record")
@click.option("--labels", required=True, help="Words to record, comma-separated: a,e,o.")
@click.option(
    "--count",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="Clips per label (re-running tops up to this).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Dataset folder (Speech Commands layout).",
)
@click.option(
    "--speaker", default="me", show_default=True, help="Your speaker name (letters, digits, -)."
)
@click.option(
    "--file",
    "file_",
    type=click.Path(dir_okay=False),
    default=None,
    help="Read a recorded session from a file instead of the microphone.",
)
@click.argument("stdin", required=False, metavar="[-]")
@click.option(
    "--rate",
    type=click.IntRange(1000),
    default=16000,
    show_default=True,
    help="Sample rate of PCM on stdin.",
)
@click.option(
    "--input-device",
    default=None,
    help="Microphone index or name (see `edgetune listen --list-devices`).",
)
@click.option(
    "--window",
    type=click.FloatRange(1.5),
    default=2.0,
    show_default=True,
    help="Seconds captured after each prompt.",
)
@click.option(
    "--countdown",
    type=click.IntRange(0),
    default=2,
    show_default=True,
    help="Seconds counted down before each prompt.",
)
@click.option(
    "--background",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    help="Seconds of the quiet room to record for _silence_ (once per speaker; 0: none).",
)
@click.option("--yes", is_flag=True, help="Keep every take without asking (no retake key).")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the session summary as one JSON object."
)
def record_cmd(
    labels,
    count,
    out,
    speaker,
    file_,
    stdin,
    rate,
    input_device,
    window,
    countdown,
    background,
    yes,
    as_json,
):
    """Record your own voice, prompted, into a dataset folder for fine-tuning.

    \b
    OUT/<label>/<speaker>_nohash_<n>.wav: 1 s clips trimmed around each utterance
    OUT/_background_noise_/<speaker>_room_<n>.wav: the quiet room, for _silence_
    After each take: Enter keeps it, r records it again, q stops (the clips so far are kept)."""
    from edgetune.runtime.record import record_session

    if stdin not in (None, "-"):
        raise click.UsageError(
            f"unexpected argument {stdin!r}; use --file {stdin} for a file, or `-` for stdin"
        )
    if file_ and stdin:
        raise click.UsageError("give --file or `-`, not both")
    # keys come from the terminal: not when stdin carries the audio, nor with --yes
    ui = _TerminalUI(interactive=not yes and stdin is None and sys.stdin.isatty())
    with _capture(file_, stdin, rate, input_device) as capture:
        click.echo(f"recording from {capture.source} into {out}", err=True)
        r = record_session(
            capture,
            out,
            labels.split(","),
            count,
            speaker,
            ui=ui,
            seconds=window,
            countdown=countdown,
            background_seconds=background,
        )
    if as_json:
        echo_json(r.to_dict())
        return
    counts = ", ".join(f"{k} {v}" for k, v in r.counts.items())
    click.echo(f"wrote {len(r.written)} clips to {out} ({r.ended}); now {counts} of {speaker}")
    if r.background:
        click.echo(f"room background: {r.background}")
    if r.missed:
        click.echo(f"{r.missed} prompts heard nothing")


@click.command("stream-eval")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--stream",
    "wav",
    required=True,
    type=click.Path(dir_okay=False),
    help="Long test stream (wav).",
)
@click.option(
    "--truth",
    required=True,
    type=click.Path(dir_okay=False),
    help="Its truth CSV: label,onset_s[,offset_s].",
)
@click.option(
    "--tolerance-ms",
    type=click.FloatRange(0),
    default=750.0,
    show_default=True,
    help="How long after a word ends a detection still counts.",
)
@click.option(
    "--calibrate",
    is_flag=True,
    help="Grid-search average/threshold/suppression (use a validation stream).",
)
@click.option(
    "--max-fa-per-hour",
    type=click.FloatRange(0),
    default=2.0,
    show_default=True,
    help="With --calibrate: false-accept bound.",
)
@click.option(
    "--save",
    is_flag=True,
    help="With --calibrate: write the settings found into MODEL, so `listen` uses them.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None, help="Write the JSON result here."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("--head", help="Which head of a merged model (`edgetune merge`) to score.")
@_stream_options
def stream_eval_cmd(
    model,
    wav,
    truth,
    tolerance_ms,
    calibrate,
    max_fa_per_hour,
    save,
    out,
    as_json,
    head,
    hop_ms,
    average_ms,
    threshold,
    suppress_ms,
):
    """Streaming accuracy of MODEL on a long stream with truth (TensorFlow's test_streaming_accuracy)."""
    from edgetune.files import write_json_atomic
    from edgetune.runtime import streameval as S

    if calibrate:
        if average_ms is not None or threshold is not None or suppress_ms is not None:
            raise click.UsageError(
                "--calibrate searches --average-ms, --threshold and --suppress-ms; give only --hop-ms"
            )
        r = S.calibrate(model, wav, truth, tolerance_ms, max_fa_per_hour, hop_ms=hop_ms, head=head)
        if save:
            S.save_calibration(model, r, wav, head)
    elif save:
        raise click.UsageError("--save writes what --calibrate finds; add --calibrate")
    else:
        r = S.stream_eval(
            model, wav, truth, tolerance_ms, hop_ms, average_ms, threshold, suppress_ms, head=head
        )
    if out:
        write_json_atomic(out, r)
    if as_json:
        echo_json(r)
        return
    if calibrate:
        b = r["best"]
        click.echo(S.format_eval(r["result"]))
        met = "meets" if r["constraint_met"] else "no setting met"
        click.echo(
            f"\nbest of {r['grid_size']} settings ({met} <= {r['max_fa_per_hour']:g} false accepts/hour): "
            f"--hop-ms {b['hop_ms']:g} --average-ms {b['average_ms']:g} --threshold {b['threshold']:g} --suppress-ms {b['suppress_ms']:g}"
        )
        if r["note"]:
            click.echo(f"note: {r['note']}")
        if save:
            click.echo(f"saved into {model}: `edgetune listen {model}` uses these settings")
    else:
        click.echo(S.format_eval(r))


COMMANDS: list[click.Command] = [
    verify_cmd,
    devices_cmd,
    bench_cmd,
    listen_cmd,
    record_cmd,
    stream_eval_cmd,
]
