"""onnxruntime latency and streaming real-time factor of exported models, as JSON.

    python tools/bench_runtime.py RUN/finetuned-fp32.onnx RUN/qat-int8.onnx --torch RUN/finetuned.pt --out bench.json

For each file: batch-1 inference latency (mean/p50/p99) at 1 thread and at N threads,
the streaming loop's real-time factor over `--seconds` of audio, front-end cost per
hop, size and precision (read from the file's metadata). Files are compared in a
`comparison` block: fp32 vs int8 speed-up and size ratio when both are given.

`--merged M.onnx` adds a merged model (`edgetune merge`) and compares it with the
other files, its parts, run one after another: bytes, latency and real-time factor.

`--torch CKPT` adds the float checkpoint run by torch eager on the CPU (batch-1
latency at 1 and N threads; no streaming loop, which is device-side only), so
torch fp32, onnxruntime fp32 and onnxruntime int8 sit side by side in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgetune.runtime.bench import bench


def bench_models(
    model_files: list[str | os.PathLike],
    seconds: float = 30.0,
    runs: int = 300,
    threads: int | None = None,
) -> dict:
    """One record per ONNX file (onnxruntime); `threads` for the multi-thread figures
    (default: all cores). Device-side only: no torch is imported here."""
    records = []
    for f in model_files:
        r = bench(f, device=None, seconds=seconds, runs=runs, threads=threads)
        records.append(
            {
                "backend": "onnxruntime",
                "model": str(f),
                "precision": r["precision"],
                "file_bytes": r["file_bytes"],
                "latency_1_thread": r["latency_1_thread"],
                "latency_n_threads": r["latency_device_threads"],
                "frontend_ms_per_hop": r["frontend_ms_per_hop"],
                "stream_real_time_factor": r["stream"]["real_time_factor"],
                "stream_audio_seconds": r["stream"]["audio_seconds"],
                "peak_rss_mb": r["peak_rss_mb"],
            }
        )
    return {"machine": machine(), "models": records, "comparison": compare(records)}


def bench_torch(checkpoint: str | os.PathLike, runs: int = 300, threads: int | None = None) -> dict:
    """torch eager fp32 batch-1 latency of a float checkpoint (host side: imports torch)."""
    import time

    import numpy as np
    import torch

    from edgetune.frontend import FrontEnd
    from edgetune.train.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt).eval()
    fe = FrontEnd.from_dict(ckpt["frontend"])
    x = torch.randn(1, 1, fe.n_frames, fe.n_mels) * 3 - 5

    def latency(n_threads: int) -> dict:
        torch.set_num_threads(n_threads)
        with torch.inference_mode():
            for _ in range(10):
                model(x)
            ms = []
            for _ in range(runs):
                t0 = time.perf_counter()
                model(x)
                ms.append(1000 * (time.perf_counter() - t0))
        ms = np.array(ms)
        return {"threads": n_threads, "runs": runs, "mean_ms": round(float(ms.mean()), 4),
                "p50_ms": round(float(np.percentile(ms, 50)), 4),
                "p99_ms": round(float(np.percentile(ms, 99)), 4)}

    return {"backend": "torch", "model": str(checkpoint), "precision": "fp32",
            "file_bytes": Path(checkpoint).stat().st_size, "latency_1_thread": latency(1),
            "latency_n_threads": latency(threads or os.cpu_count() or 1),
            "frontend_ms_per_hop": None, "stream_real_time_factor": None,
            "torch": torch.__version__}


def compare(records: list[dict]) -> list[dict]:
    """fp32 vs int8 pairs: for every fp32 record, against every int8 record (same backend or not)."""
    fp32 = [r for r in records if r["precision"] == "fp32"]
    int8 = [r for r in records if r["precision"] == "int8"]
    out = []
    for a in fp32:
        for b in int8:
            out.append(
                {
                    "fp32": f"{a['backend']}:{a['model']}",
                    "int8": f"{b['backend']}:{b['model']}",
                    "speedup_1_thread_p50": _ratio(
                        a["latency_1_thread"]["p50_ms"], b["latency_1_thread"]["p50_ms"]
                    ),
                    "speedup_n_threads_p50": _ratio(
                        a["latency_n_threads"]["p50_ms"], b["latency_n_threads"]["p50_ms"]
                    ),
                    "size_ratio": _ratio(a["file_bytes"], b["file_bytes"]),
                }
            )
    return out


def compare_merged(merged: dict, parts: list[dict]) -> dict:
    """One merged model (all heads in one pass) against its parts run one after another."""
    def total(key: str, stat: str = "p50_ms") -> float:
        return round(sum(p[key][stat] for p in parts), 4)

    return {
        "merged": merged["model"],
        "parts": [p["model"] for p in parts],
        "file_bytes": {"merged": merged["file_bytes"], "parts": sum(p["file_bytes"] for p in parts)},
        "p50_ms_1_thread": {"merged": merged["latency_1_thread"]["p50_ms"], "parts": total("latency_1_thread")},
        "p50_ms_n_threads": {"merged": merged["latency_n_threads"]["p50_ms"], "parts": total("latency_n_threads")},
        "stream_real_time_factor": {
            "merged": merged["stream_real_time_factor"],
            "parts": round(sum(p["stream_real_time_factor"] for p in parts), 5),
        },
        "size_ratio": _ratio(sum(p["file_bytes"] for p in parts), merged["file_bytes"]),
        "speedup_1_thread_p50": _ratio(total("latency_1_thread"), merged["latency_1_thread"]["p50_ms"]),
    }


def _ratio(a, b):
    return round(a / b, 3) if a and b else None


def machine() -> dict:
    import onnxruntime

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="edgetune ONNX files (fp32 and/or int8)")
    ap.add_argument("--seconds", type=float, default=30.0, help="audio for the streaming run")
    ap.add_argument("--runs", type=int, default=300, help="timed inferences per setting")
    ap.add_argument(
        "--threads", type=int, default=None, help="threads for the multi-thread figures"
    )
    ap.add_argument("--torch", action="append", default=[], metavar="CKPT",
                    help="also time this float checkpoint in torch (repeatable)")
    ap.add_argument("--merged", default=None, metavar="ONNX",
                    help="a merged model (edgetune merge) whose parts are the other models: "
                         "compared with them run one after another")
    ap.add_argument("--out", default=None, help="write JSON here (default: stdout only)")
    a = ap.parse_args(argv)
    result = bench_models(a.models + ([a.merged] if a.merged else []), a.seconds, a.runs, a.threads)
    if a.merged:
        *parts, merged = result["models"]
        result["merged_vs_parts"] = compare_merged(merged, parts)
    if a.torch:
        result["models"] += [bench_torch(c, a.runs, a.threads) for c in a.torch]
        result["comparison"] = compare(result["models"])
    text = json.dumps(result, indent=2)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
