"""Data-side throughput: synthesis of the built-in corpus (per engine and overall) and
the front end (host torchaudio and device numpy implementations, clips/s).

    python tools/bench_data.py [--out bench_data.json] [--clips-per-word 20] [--workers N]

Per engine: clips/s of one process rendering whole clips (engine + effects, no
file writes) after a warm-up. Overall: wall-clock clips/s of build_corpus on a
fresh folder (commands words, background noise excluded), with `--workers` processes.
Front end: 1-s clips through log-mel, device numpy one clip at a time (as a device
runs it) and host torch in batches of 256 on the CPU. Writes JSON and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from edgetune.data.synth import corpus as C
from edgetune.data.synth.engines import available_engines


def bench_engine(name: str, n: int, seed: int) -> dict:
    voices = C.voice_identities(seed, [name])
    words = C.COMMANDS
    plans = [C.plan_clip(seed, w, i, C.make_word(w), voices) for i in range(n // len(words) + 1) for w in words][:n]
    C.render_clip(plans[0])  # warm-up: opens the library / session
    t0 = time.perf_counter()
    secs = []
    for p in plans:
        _, info = C.render_clip(p)
        secs.append(info["word_seconds"])
    dt = time.perf_counter() - t0
    return {"clips": n, "seconds": round(dt, 3), "clips_per_second": round(n / dt, 2),
            "ms_per_clip": round(1000 * dt / n, 2),
            "word_seconds_p5_p50_p95": [round(float(x), 3) for x in np.percentile(secs, [5, 50, 95])]}


def bench_frontend(n: int = 512, seed: int = 0) -> dict:
    from edgetune.frontend import FrontEnd, log_mel

    fe = FrontEnd()
    clips = np.random.default_rng(seed).standard_normal((n, fe.clip_samples)).astype(np.float32) * 0.1
    log_mel(fe, clips[0])
    t0 = time.perf_counter()
    for c in clips:
        log_mel(fe, c)
    device = n / (time.perf_counter() - t0)
    out = {"clips": n, "device_numpy_clips_per_second": round(device, 1)}
    try:
        import torch

        from edgetune.train.features import LogMel

        logmel, x = LogMel(fe), torch.from_numpy(clips)
        with torch.no_grad():
            logmel(x[:8])
            t0 = time.perf_counter()
            for i in range(0, n, 256):
                logmel(x[i : i + 256])
        out["host_torch_cpu_clips_per_second"] = round(n / (time.perf_counter() - t0), 1)
        out["torch_threads"] = torch.get_num_threads()
    except ImportError:
        out["host_torch_cpu_clips_per_second"] = None
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_data.json")
    ap.add_argument("--clips-per-word", type=int, default=20, help="for the build_corpus run (10 words + unknown)")
    ap.add_argument("--engine-clips", type=int, default=60, help="clips per engine for the single-process figure")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    names = available_engines(["espeak", "piper"])
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "frontend": bench_frontend(seed=args.seed),
        "engines": {name: bench_engine(name, args.engine_clips, args.seed) for name in names},
    }
    with tempfile.TemporaryDirectory() as tmp:
        s = C.build_corpus(Path(tmp) / "c", "commands", clips_per_word=args.clips_per_word, seed=args.seed,
                           workers=args.workers, engines=names, progress=False, noise=False)
    result["build_corpus"] = {
        "task": "commands", "clips": s["written"], "workers": s["workers"], "seconds": s["seconds"],
        "clips_per_second": s["clips_per_second"], "engine_clips": s["engine_rendered"],
        "engine_cpu_seconds": s["engine_cpu_seconds"], "word_seconds_median": s["word_seconds_median"],
        "note": "wall clock including worker start-up (spawn, library and model load)",
    }
    text = json.dumps(result, indent=2)
    Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return result


if __name__ == "__main__":
    main()
