"""`edgetune data check`: what is wrong with a dataset, before training finds out.

Errors (exit 1): files that cannot be used (not audio, empty, truncated,
NaN/inf, absurdly long) and speakers that span splits. Notes: files that load
fine but get converted on the way in (other rates, widths, channel counts).
Nothing on disk is modified.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from pathlib import Path

from edgetune.audio import MAX_CLIP_SECONDS, load_audio, probe
from edgetune.data.dataset import SPLITS, load_dataset
from edgetune.errors import AudioError

TARGET_RATE = 16000
_DURATION_BINS = (0.25, 0.5, 1.0, 2.0, 5.0, MAX_CLIP_SECONDS)


def check_file(path: str) -> tuple[str | None, list[str]]:
    """(error or None, conversion notes) for one labelled clip."""
    try:
        info = probe(path)
        short = _riff_shortfall(path)
        if short:
            return f"truncated: the WAV header promises {short} more bytes than the file holds", []
        load_audio(path, TARGET_RATE)
    except AudioError as e:
        return str(e).split(": ", 1)[-1], []
    except Exception as e:  # noqa: BLE001 (libsndfile errors mid-stream on damaged files)
        return f"cannot decode ({type(e).__name__}: {str(e)[:120]})", []
    notes = []
    if info.sample_rate != TARGET_RATE:
        notes.append(f"resampled {info.sample_rate} Hz -> {TARGET_RATE} Hz")
    if info.channels != 1:
        notes.append(f"{info.channels} channels mixed to mono")
    if info.subtype not in ("PCM_16", "FLOAT"):
        notes.append(f"{info.subtype} converted to float")
    return None, notes


def _riff_shortfall(path: str) -> int:
    """Bytes a RIFF/WAVE header declares beyond the end of the file (0 if whole or not WAV).
    libsndfile quietly reads what is there, so a cut-off recording would pass unnoticed."""
    with open(path, "rb") as f:
        head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return 0
    declared = int.from_bytes(head[4:8], "little") + 8
    return max(declared - Path(path).stat().st_size, 0)


def check_dataset(source: str | Path, progress: bool = False) -> dict:
    ds = load_dataset(source, silence=False)
    files = [e for e in ds.examples if e.noise_position is None]
    it = files
    if progress:
        from tqdm import tqdm

        it = tqdm(files, desc="checking", unit="file", leave=False)
    errors, notes, rates, durations = [], [], Counter(), Counter()
    for e in it:
        error, conv = check_file(e.path)
        if error:
            errors.append({"path": e.path, "problem": error})
            continue
        notes += [{"path": e.path, "note": n} for n in conv]
        info = probe(e.path)
        rates[info.sample_rate] += 1
        durations[_duration_bin(info.seconds)] += 1
    leaks = speaker_leaks(ds.examples)
    errors += [{"path": spk, "problem": f"speaker in several splits: {', '.join(s)}"} for spk, s in leaks.items()]
    return {
        "source": str(source),
        "files": len(files),
        "labels": ds.labels,
        "counts": ds.counts(),
        "speakers": {s: len({e.speaker for e in files if e.split == s}) for s in SPLITS},
        "sample_rates": dict(sorted(rates.items())),
        "durations": {k: durations[k] for k in _bin_names() if durations[k]},
        "background_noise": [Path(p).name for p in ds.noise_files],
        "errors": errors,
        "notes": notes,
        "speaker_leaks": len(leaks),
        "ok": not errors,
    }


def speaker_leaks(examples) -> dict[str, list[str]]:
    splits = defaultdict(set)
    for e in examples:
        if e.noise_position is None:
            splits[e.speaker].add(e.split)
    return {spk: sorted(s) for spk, s in splits.items() if len(s) > 1}


def _bin_names() -> list[str]:
    edges = (0.0,) + _DURATION_BINS
    return [f"{lo:g}-{hi:g}s" for lo, hi in itertools.pairwise(edges)] + [f">{_DURATION_BINS[-1]:g}s"]


def _duration_bin(seconds: float) -> str:
    names = _bin_names()
    for name, hi in zip(names, _DURATION_BINS):
        if seconds <= hi:
            return name
    return names[-1]


def format_check(r: dict) -> str:
    lines = [f"{r['source']}: {r['files']} files, labels: {', '.join(r['labels'])}"]
    header = "label".ljust(14) + "".join(s.rjust(8) for s in SPLITS)
    lines += ["", header]
    for lab in r["labels"]:
        lines.append(lab.ljust(14) + "".join(str(r["counts"][s][lab]).rjust(8) for s in SPLITS))
    lines.append("speakers".ljust(14) + "".join(str(r["speakers"][s]).rjust(8) for s in SPLITS))
    lines.append("")
    lines.append("sample rates: " + ", ".join(f"{k} Hz x{v}" for k, v in r["sample_rates"].items()))
    lines.append("durations:    " + ", ".join(f"{k} x{v}" for k, v in r["durations"].items()))
    if r["background_noise"]:
        lines.append(f"background noise: {len(r['background_noise'])} recordings")
    for n in r["notes"]:
        lines.append(f"note: {n['path']}: {n['note']}")
    for e in r["errors"]:
        lines.append(f"error: {e['path']}: {e['problem']}")
    lines.append(f"{len(r['errors'])} errors, {len(r['notes'])} files converted on load, "
                 f"{r['speaker_leaks']} speakers leaking across splits")
    return "\n".join(lines)
