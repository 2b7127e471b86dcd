"""Input level and voice activity (numpy only): the gate of `--min-level` and the trimming of `record`.

Levels are dBFS of the RMS, so a full-scale sine reads -3 dBFS. A window's level
is that of its loudest 100 ms: a short word in a quiet second still counts as loud.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOOR_DB = -120.0  # digital silence reads this, not -inf (JSON has no infinity)
LEVEL_BLOCK_MS = 100.0


def to_db(power: float) -> float:
    return max(FLOOR_DB, 10.0 * float(np.log10(max(power, 1e-12))))


def peak_level_db(audio: np.ndarray, sample_rate: int, block_ms: float = LEVEL_BLOCK_MS) -> float:
    """dBFS of the loudest `block_ms` (sliding) of `audio`."""
    x = np.asarray(audio, np.float64).reshape(-1) ** 2
    if x.size == 0:
        return FLOOR_DB
    n = max(1, min(x.size, round(sample_rate * block_ms / 1000)))
    c = np.concatenate([[0.0], np.cumsum(x)])
    return to_db(float(np.max(c[n:] - c[:-n])) / n)


def frame_levels_db(audio: np.ndarray, sample_rate: int, frame_ms: float = 10.0) -> np.ndarray:
    """dBFS of consecutive `frame_ms` frames (the last partial frame dropped)."""
    n = max(1, round(sample_rate * frame_ms / 1000))
    k = len(audio) // n
    if k == 0:
        return np.zeros(0)
    power = (np.asarray(audio[: k * n], np.float64).reshape(k, n) ** 2).mean(axis=1)
    return 10.0 * np.log10(np.maximum(power, 10 ** (FLOOR_DB / 10)))


@dataclass(frozen=True)
class Utterance:
    """Where the voice is in a capture (samples), and how it sounded."""

    start: int
    end: int
    level_db: float  # loudest 100 ms of the utterance
    floor_db: float  # the room between words (10th percentile of 10 ms frames)
    clipped: bool  # samples at full scale: too loud, the take is distorted


def find_utterance(
    audio: np.ndarray,
    sample_rate: int,
    min_level_db: float = -55.0,
    above_floor_db: float = 12.0,
    merge_ms: float = 250.0,
    pad_ms: float = 80.0,
) -> Utterance | None:
    """Energy VAD: the loudest run of 10 ms frames above max(floor + `above_floor_db`,
    `min_level_db`), with gaps under `merge_ms` bridged (a word's stops and pauses)
    and `pad_ms` kept either side (soft onsets and releases); None when nothing is that loud."""
    frame = max(1, round(sample_rate / 100))
    db = frame_levels_db(audio, sample_rate)
    if db.size == 0:
        return None
    floor = float(np.percentile(db, 10))
    on = db > max(floor + above_floor_db, min_level_db)
    if not on.any():
        return None
    # runs of voiced frames, then bridge the short gaps between them
    edges = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(int), [0]])))
    runs = [[s, e] for s, e in zip(edges[::2], edges[1::2])]
    merged = [runs[0]]
    for s, e in runs[1:]:
        if (s - merged[-1][1]) * 10 < merge_ms:
            merged[-1][1] = e
        else:
            merged.append([s, e])
    power = 10 ** (db / 10)
    s, e = max(merged, key=lambda r: power[r[0] : r[1]].sum())
    pad = round(pad_ms / 10)
    start, end = max(0, (s - pad) * frame), min(len(audio), (e + pad) * frame)
    seg = audio[start:end]
    return Utterance(
        start=start,
        end=end,
        level_db=round(peak_level_db(seg, sample_rate), 2),
        floor_db=round(floor, 2),
        clipped=bool(np.max(np.abs(seg)) >= 0.999),
    )


def clip_around(audio: np.ndarray, utt: Utterance, n: int) -> np.ndarray:
    """Exactly `n` samples of the capture centred on the utterance, real room sound around it
    (as Speech Commands clips are); zero-padded only when the capture is shorter than `n`."""
    audio = np.asarray(audio, np.float32)
    if len(audio) <= n:
        pad = n - len(audio)
        return np.pad(audio, (pad // 2, pad - pad // 2))
    centre = (utt.start + utt.end) // 2
    start = min(max(0, centre - n // 2), len(audio) - n)
    return audio[start : start + n].copy()
