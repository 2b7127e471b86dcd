"""`edgetune quickstart`: the whole pipeline on the built-in corpus, one line per stage.

corpus -> finetune (from the shipped base) -> compress (prune + QAT) -> export
fp32 and int8 -> verify the int8 model on the device path against the 90% goal
-> streaming evaluation on a test-voice stream -> bench -> report. Each stage
reuses its output when it is already there, so re-running is cheap.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgetune.errors import EdgetuneError
from edgetune.files import write_json_atomic
from edgetune.paths import REPO_MODELS, corpus_dir

# DS-CNN-S, not yet sembed, though sembed scores higher on real digits: sembed's commands
# quickstart was measured only with the 10-minute stream tuning it lost on (23.7% of the
# test stream's words vs 47.5%; README "Noise, and words in a stream"), and `listen` is
# what a quickstart user tries next.
DEFAULT_BASE = "dscnn-s"


@dataclass(frozen=True)
class QuickstartConfig:
    task: str = "vowels"
    out: Path = Path("runs/quickstart")
    clips_per_word: int = 200
    epochs: int = 15
    stream_minutes: float = 5.0
    device_profile: str = "x86-64-laptop"
    device: str = "auto"
    base: Path = REPO_MODELS / f"{DEFAULT_BASE}.pt"


def _stage(name: str, done: Path, run: Callable[[], str], say: Callable[[str], None]) -> None:
    """Run one stage unless its output exists; print one line either way."""
    t0 = time.time()
    if done.exists():
        say(f"{name:<10} reused {done}")
        return
    line = run()
    say(f"{name:<10} {line}  ({time.time() - t0:.0f} s)")


def quickstart(cfg: QuickstartConfig, say: Callable[[str], None] = print, progress: bool = False) -> dict:
    from edgetune.compress.config import CompressConfig
    from edgetune.compress.pipeline import compress
    from edgetune.data.augment import AugmentConfig
    from edgetune.data.synth.corpus import build_corpus
    from edgetune.export import export_onnx
    from edgetune.runtime.bench import bench
    from edgetune.runtime.streameval import make_stream, stream_eval
    from edgetune.runtime.verify import verify
    from edgetune.train.finetune import finetune
    from edgetune.train.loop import TrainConfig

    if not cfg.base.exists():
        raise EdgetuneError(f"{cfg.base}: the shipped base model is missing; make it with "
                            "`python tools/pretrain_base.py` (dscnn-s) or `python tools/import_speech_embedding.py` "
                            "(sembed), or pass --base")
    run, data = cfg.out, corpus_dir(cfg.task)
    run.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    def corpus_stage():
        s = build_corpus(data, cfg.task, clips_per_word=cfg.clips_per_word, progress=progress)
        return f"{s['clips']} clips, {s['speakers']} voices in {data}"

    _stage("corpus", data / "corpus.json", corpus_stage, say)

    def finetune_stage():
        # light augmentation: the corpus already carries its speed, microphone, room and
        # level variety (vowels: 95.9% test with it, see README)
        train = TrainConfig(epochs=cfg.epochs, device=cfg.device, augment=AugmentConfig.light())
        r = finetune(data, run, base=cfg.base, cfg=train, progress=progress, command="edgetune quickstart")
        before = "n/a" if r["base_test_accuracy"] is None else f"{r['base_test_accuracy']:.1%}"
        return f"test accuracy {before} (base) -> {r['test_accuracy']:.1%} (fine-tuned)"

    _stage("finetune", run / "finetuned.pt", finetune_stage, say)

    def compress_stage():
        r = compress(run / "finetuned.pt", data, run, CompressConfig(device=cfg.device),
                     progress=progress, log=lambda m: None, command="edgetune quickstart")
        s = {row["stage"]: row for row in r["stages"]}
        return (f"params {s['finetuned']['params']:,} -> {s['pruned']['params']:,}, "
                f"int8 test accuracy {s['int8']['test_accuracy']:.1%}")

    _stage("compress", run / "qat.pt", compress_stage, say)

    for ckpt, precision in (("finetuned", "fp32"), ("qat", "int8")):
        target = run / f"{ckpt}-{precision}.onnx"

        def export_stage(ckpt=ckpt, target=target):
            r = export_onnx(run / f"{ckpt}.pt", target, data, device_profile=cfg.device_profile)
            p, st = r["parity"], r["stream"]["settings"]
            tuned = "tuned on validation voices" if r["stream"]["saved"] else "defaults"
            return (f"{target.name} {r['bytes'] / 1024:.1f} KB, parity: max diff "
                    f"{p['max_abs_diff']:.1e}, agreement {p['top1_agreement']:.1%}; stream "
                    f"{st['average_ms']:g} ms / {st['threshold']:g} ({tuned})")

        _stage("export", target, export_stage, say)

    int8 = run / "qat-int8.onnx"

    def verify_stage():
        r = verify(int8, data, split="test")
        write_json_atomic(run / "verify.json", r)
        return (f"int8 on the device path: {r['accuracy']:.1%} on {r['n']} test clips "
                f"({'PASS' if r['passed'] else 'FAIL'} vs goal {r['min_accuracy']:.0%})")

    _stage("verify", run / "verify.json", verify_stage, say)

    def stream_stage():
        wav, truth = run / "stream.wav", run / "stream.csv"
        make_stream(data, split="test", minutes=cfg.stream_minutes, out_wav=wav, out_csv=truth)
        r = stream_eval(int8, wav, truth)
        write_json_atomic(run / "stream.json", r)
        return (f"{r['words']} words in {r['audio_seconds'] / 60:.0f} min: {r['correct_pct']:.1f}% "
                f"correct, {r['false_accepts_per_hour']:.1f} false accepts/hour")

    _stage("stream", run / "stream.json", stream_stage, say)

    def bench_stage():
        r = bench(int8, device=cfg.device_profile, seconds=20, runs=100)
        write_json_atomic(run / "bench.json", r)
        return (f"int8 latency p50 {r['latency_1_thread']['p50_ms']:.2f} ms (1 thread), streaming "
                f"real-time factor {r['stream']['real_time_factor']:.3f} on this machine")

    _stage("bench", run / "bench.json", bench_stage, say)
    report = _report(run, say)
    verified = json.loads((run / "verify.json").read_text())
    say(f"done in {(time.time() - t_start) / 60:.1f} min. next:")
    say(f"  edgetune listen {int8}                 # your microphone")
    say(f"  edgetune verify {int8} --data {data}")
    say(f"  edgetune report {run}")
    return {"run": str(run), "data": str(data), "int8": str(int8), "accuracy": verified["accuracy"],
            "passed": verified["passed"], "report": report, "minutes": (time.time() - t_start) / 60}


def _report(run: Path, say) -> str:
    from edgetune.report.report import build_report

    r = build_report(run)
    path = r["html"]
    say(f"{'report':<10} {path}")
    return str(path)
