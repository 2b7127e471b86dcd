"""What a model costs on this machine, checked against a device profile's budgets.

Measured (run it on the board itself; on another machine the figures are that machine's):
- file size;
- front end: ms of numpy per hop of streamed audio (StreamingLogMel);
- inference latency p50/p99, batch 1, at 1 thread and at the profile's threads;
- the full streaming loop (front end + ring + inference + smoothing) over `seconds`
  of audio: real-time factor = compute time / audio time;
- memory: peak resident set size of the process (ru_maxrss), and how much it grew
  from before the model was loaded to the end of the streaming run.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time

import numpy as np

from edgetune.errors import EdgetuneError
from edgetune.frontend import StreamingLogMel, log_mel
from edgetune.runtime.devices import DeviceProfile, get_profile
from edgetune.runtime.model import load_model
from edgetune.runtime.stream import StreamEngine


class BudgetExceeded(EdgetuneError):
    """bench: the model misses one of the device profile's budgets (exit 1)."""


def _maxrss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (
        r / (1024 * 1024) if sys.platform == "darwin" else r / 1024
    )  # bytes on macOS, KiB on Linux


def bench_audio(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """Speech-like test signal: noise floor with tone bursts (content does not change the cost)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    x = 0.01 * rng.standard_normal(n)
    t = np.arange(int(0.5 * sample_rate)) / sample_rate
    for start in range(0, n - len(t), 2 * sample_rate):
        f = rng.uniform(200, min(4000, sample_rate / 2 - 100))
        x[start : start + len(t)] += 0.3 * np.sin(2 * np.pi * f * t)
    return x.astype(np.float32)


def _latency(path, threads: int | None, feats: np.ndarray, runs: int, warmup: int = 10) -> dict:
    rec = load_model(path, threads=threads)
    for _ in range(warmup):
        rec.predict_features(feats)
    times = np.empty(runs)
    for i in range(runs):
        t = time.perf_counter()
        rec.predict_features(feats)
        times[i] = time.perf_counter() - t
    ms = times * 1000
    return {
        "threads": threads,
        "runs": runs,
        "mean_ms": round(float(ms.mean()), 4),
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
    }


def frontend_cost(fe, hop_ms: float, seconds: float = 10.0) -> dict:
    audio = bench_audio(seconds, fe.sample_rate, seed=1)
    hop = round(fe.sample_rate * hop_ms / 1000)
    mel = StreamingLogMel(fe)
    mel.push(audio[:hop])  # warm
    mel.reset()
    n = 0
    t = time.perf_counter()
    for i in range(0, len(audio) - hop + 1, hop):
        mel.push(audio[i : i + hop])
        n += 1
    dt = time.perf_counter() - t
    return {"hop_ms": hop_ms, "hops": n, "ms_per_hop": round(dt / n * 1000, 4)}


def bench(
    model_path: str | os.PathLike,
    device: str | DeviceProfile | None = None,
    seconds: float = 60.0,
    runs: int = 200,
    threads: int | None = None,
) -> dict:
    """Measure one ONNX file; with a device profile, check each budget (see module doc).

    threads: overrides the profile's thread count (default: profile's, else all cores)."""
    profile = get_profile(device) if isinstance(device, str) else device
    dev_threads = threads or (profile.threads if profile else (os.cpu_count() or 1))
    rss_before = _maxrss_mb()
    rec = load_model(model_path, threads=dev_threads)
    fe = rec.frontend
    feats = log_mel(fe, bench_audio(fe.clip_seconds, fe.sample_rate))[None, None]
    if feats.shape[2] != fe.n_frames:
        raise EdgetuneError(f"front end made {feats.shape[2]} frames, model wants {fe.n_frames}")

    result = {
        "model": str(model_path),
        "precision": rec.precision,
        "file_bytes": rec.file_bytes,
        "labels": len(rec.labels),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "onnxruntime": _ort_version(),
        },
        "device": profile.to_dict() if profile else None,
        "frontend_ms_per_hop": frontend_cost(fe, rec.stream.hop_ms)["ms_per_hop"],
        "latency_1_thread": _latency(model_path, 1, feats, runs),
        "latency_device_threads": _latency(model_path, dev_threads, feats, runs),
    }

    engine = StreamEngine(rec)
    audio = bench_audio(seconds, fe.sample_rate, seed=2)
    hop = round(fe.sample_rate * rec.stream.hop_ms / 1000)
    wall = time.perf_counter()
    for i in range(0, len(audio), hop):
        engine.push(audio[i : i + hop])
    wall = time.perf_counter() - wall
    st = engine.stats()
    result["stream"] = {
        "audio_seconds": st["audio_seconds"],
        "threads": dev_threads,
        "hop_ms": engine.settings.hop_ms,
        "inferences": st["inferences"],
        "inference_ms_p50": st["inference_ms_p50"],
        "inference_ms_p99": st["inference_ms_p99"],
        "real_time_factor": round(wall / st["audio_seconds"], 5),
    }
    peak = _maxrss_mb()
    result["peak_rss_mb"] = round(peak, 1)
    result["rss_growth_mb"] = round(peak - rss_before, 1)

    checks = []
    if profile:
        lat = result["latency_device_threads"]["p99_ms"]
        checks = [
            _check("model_size", rec.file_bytes / 1024, profile.model_size_budget_kb, "kB"),
            _check("latency", lat, profile.latency_budget_ms, "ms p99"),
            _check(
                "real_time", result["stream"]["real_time_factor"], profile.rtf_budget, "x real time"
            ),
            _check("memory", peak, profile.memory_limit_mb, "MB peak RSS"),
        ]
        result["precision_note"] = (
            None
            if rec.precision == profile.precision
            else f"{profile.name} prefers {profile.precision}; this model is {rec.precision}"
        )
    result["checks"] = checks
    result["passed"] = all(c["passed"] for c in checks)
    return result


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _check(budget: str, value: float, limit: float, unit: str) -> dict:
    return {
        "budget": budget,
        "value": round(float(value), 4),
        "limit": float(limit),
        "unit": unit,
        "passed": bool(value <= limit),
    }


def format_bench(r: dict) -> str:
    m = r["machine"]
    l1, ld, s = r["latency_1_thread"], r["latency_device_threads"], r["stream"]
    lines = [
        f"model        {r['model']} ({r['precision']}, {r['file_bytes'] / 1024:.1f} kB, {r['labels']} classes)",
        f"measured on  {m['processor']}, {m['cpu_count']} cores, onnxruntime {m['onnxruntime']}",
        f"front end    {r['frontend_ms_per_hop']:.3f} ms per {s['hop_ms']:g} ms hop",
        f"inference    1 thread: p50 {l1['p50_ms']:.3f} ms, p99 {l1['p99_ms']:.3f} ms",
        f"             {ld['threads']} threads: p50 {ld['p50_ms']:.3f} ms, p99 {ld['p99_ms']:.3f} ms",
        (
            f"streaming    {s['audio_seconds']:.0f} s of audio, {s['inferences']} inferences, "
            f"real-time factor {s['real_time_factor']:.4f} ({1 / max(s['real_time_factor'], 1e-9):.0f}x faster than real time)"
        ),
        f"memory       peak RSS {r['peak_rss_mb']:.1f} MB (+{r['rss_growth_mb']:.1f} MB for model and stream)",
    ]
    if r["device"]:
        d = r["device"]
        lines += ["", f"budgets of {d['name']} ({d['description']})"]
        for c in r["checks"]:
            lines.append(
                f"  {c['budget']:<11} {c['value']:>10.3f} <= {c['limit']:<8g} {c['unit']:<12} {'ok' if c['passed'] else 'OVER'}"
            )
        if r.get("precision_note"):
            lines.append(f"  note: {r['precision_note']}")
        if _foreign(m, d):
            lines.append(
                "  note: measured on this machine, not on the board; run `edgetune bench` there for its figures"
            )
        lines.append(f"  {'PASS' if r['passed'] else 'FAIL'}")
    return "\n".join(lines)


def _foreign(machine: dict, device: dict) -> bool:
    """True when this machine is plainly not the profiled board (x86 host, ARM board)."""
    here_arm = any(k in (machine["processor"] or "").lower() for k in ("arm", "aarch"))
    board_arm = any(k in device["cpu"].lower() for k in ("arm", "cortex"))
    return here_arm != board_arm


def failure_message(r: dict) -> str:
    over = [
        f"{c['budget']} {c['value']:g} > {c['limit']:g} {c['unit']}"
        for c in r["checks"]
        if not c["passed"]
    ]
    return f"over the {r['device']['name']} budget: {'; '.join(over)}; compress or quantise the model, or pick a bigger device"
