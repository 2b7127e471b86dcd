"""Streaming accuracy, after TensorFlow's test_streaming_accuracy.

`make_stream` lays test clips (trimmed words) over background noise with gaps
and writes the truth CSV (`label,onset_s,offset_s`). `stream_eval` runs the
streaming engine over such a stream and scores its detections:

- a detection at time t belongs to the earliest unclaimed word with
  onset <= t <= offset + tolerance; each word is claimed at most once;
- claimed by a word of the model's vocabulary: *correct* when the labels agree,
  else *wrong*; claimed by nothing, or by a word the model does not report
  (`_unknown_` words, labels it lacks): a *false accept*;
- target words never claimed: *false rejects*.
Percentages are of the target words (as TensorFlow reports them); false accepts
are also given per hour of audio; latency is detection time minus word end.

`calibrate` grid-searches average_ms, threshold and suppress_ms on a stream
(use a validation stream, not the test one) for the most correct detections
with at most `max_fa_per_hour` false accepts per hour. Posteriors are computed
once; only the decision layer is replayed per setting.
"""

from __future__ import annotations

import csv
import itertools
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune.audio import MAX_LONG_SECONDS, check_writable_audio, load_audio, write_audio
from edgetune.data.dataset import SILENCE, UNKNOWN, load_dataset
from edgetune.errors import DataError, EdgetuneError
from edgetune.runtime.model import (
    NON_EVENTS,
    TUNED_KEYS,
    Recogniser,
    StreamSettings,
    load_model,
    one_head,
)
from edgetune.runtime.stream import Decider, Detection, PosteriorStream, check_settings

GRID_AVERAGE_MS = (300.0, 500.0, 750.0, 1000.0)
# down to 0.2 in steps of 0.05: sembed's smoothed scores for true words sit at 0.2-0.4 (a
# commands model's test stream: 0.3 finds 81 of 117 words with no false accept, 0.2 finds
# 97 with 13), where steps of 0.1 from 0.3 cannot place it
GRID_THRESHOLD = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
GRID_SUPPRESS_MS = (500.0, 1000.0, 1500.0, 2000.0)


@dataclass(frozen=True)
class Word:
    label: str
    onset_s: float
    offset_s: float


# ---------------------------------------------------------------- making a stream


def trim(
    audio: np.ndarray, sample_rate: int, top_db: float = 30.0, frame_ms: float = 10.0
) -> np.ndarray:
    """Cut leading and trailing parts more than `top_db` below the loudest 10 ms frame."""
    n = max(1, int(sample_rate * frame_ms / 1000))
    k = len(audio) // n
    if k == 0:
        return audio
    energy = (audio[: k * n].reshape(k, n).astype(np.float64) ** 2).mean(axis=1)
    if energy.max() <= 0:
        return audio[:0]
    loud = np.nonzero(10 * np.log10(energy / energy.max() + 1e-20) > -top_db)[0]
    return audio[loud[0] * n : (loud[-1] + 1) * n]


def _background(
    files: list[str], n: int, sample_rate: int, rng: np.random.Generator, noise_rms: float
) -> tuple[np.ndarray, str]:
    if files:
        parts = [load_audio(f, sample_rate, max_seconds=MAX_LONG_SECONDS) for f in files]
        parts = [p / (np.sqrt(np.mean(p.astype(np.float64) ** 2)) + 1e-12) for p in parts if len(p)]
        pool = np.concatenate(parts)
        start = int(rng.integers(0, len(pool)))
        reps = int(np.ceil((start + n) / len(pool)))
        noise = np.tile(pool, reps)[start : start + n]
        source = f"{len(files)} files of {Path(files[0]).parent}"
    else:
        noise = rng.standard_normal(n)
        source = "white noise (the dataset has no _background_noise_/)"
    return (noise * noise_rms).astype(np.float32), source


def make_stream(
    dataset_dir: str | os.PathLike,
    split: str = "test",
    minutes: float = 10.0,
    seed: int = 0,
    out_wav: str | os.PathLike = "stream.wav",
    out_csv: str | os.PathLike = "stream.csv",
    gap_s: tuple[float, float] = (2.0, 6.0),
    noise_rms: float = 0.01,
    sample_rate: int = 16000,
    top_db: float = 40.0,  # -30 dB cut weak consonants: 3.3 points of clip accuracy lost
    unknown_share: float | None = None,
) -> dict:
    """Write a `minutes`-long wav of the split's clips (trimmed at -top_db) over background
    noise, gaps drawn uniformly from `gap_s`, and its truth CSV `label,onset_s,offset_s`.

    Clips come from `dataset_dir` (folder or CSV manifest), `_silence_` excluded; every
    label is kept (words a model lacks test its `_unknown_` handling). `unknown_share`
    fixes the share of `_unknown_` words (default: as many as the split has). Returns a summary."""
    check_writable_audio(out_wav)
    if minutes <= 0:
        raise DataError("minutes must be positive")
    if not 0 <= gap_s[0] <= gap_s[1]:
        raise DataError(f"gap range {gap_s} is not (low, high) with 0 <= low <= high")
    ds = load_dataset(dataset_dir, silence=False)
    items = [e for e in ds.split(split) if e.label != SILENCE]
    if not items:
        raise DataError(
            f"{dataset_dir}: no clips in the {split} split to build a stream from; try --split all"
        )
    rng = np.random.default_rng(seed)
    n = round(minutes * 60 * sample_rate)
    audio, noise_source = _background(ds.noise_files, n, sample_rate, rng, noise_rms)
    words: list[Word] = []
    t = int(rng.uniform(*gap_s) * sample_rate)
    next_clip = _clip_picker(items, rng, unknown_share, f"{dataset_dir} ({split})")
    k = 0
    while True:
        it = next_clip()
        k += 1
        clip = trim(load_audio(it.path, sample_rate), sample_rate, top_db)
        if len(clip) == 0:
            continue
        if t + len(clip) > n:
            break
        audio[t : t + len(clip)] += clip
        words.append(Word(it.label, t / sample_rate, (t + len(clip)) / sample_rate))
        t += len(clip) + int(rng.uniform(*gap_s) * sample_rate)
        if k > 10 * n:  # pragma: no cover - impossible with positive clip lengths
            break
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if peak > 1.0:
        audio /= peak
    write_audio(out_wav, audio, sample_rate)
    write_truth(out_csv, words)
    return {
        "wav": str(out_wav),
        "csv": str(out_csv),
        "seconds": n / sample_rate,
        "words": len(words),
        "labels": sorted({w.label for w in words}),
        "split": split,
        "seed": seed,
        "unknown_words": sum(w.label == UNKNOWN for w in words),
        "background": noise_source,
    }


class _Rounds:
    """Clips in rounds, each round every clip once in a fresh random order."""

    def __init__(self, items: list, rng: np.random.Generator):
        self.items, self.rng = items, rng
        self.order = rng.permutation(len(items))
        self.k = 0

    def next(self):
        it = self.items[self.order[self.k % len(self.items)]]
        self.k += 1
        if self.k % len(self.items) == 0:
            self.order = self.rng.permutation(len(self.items))
        return it


def _clip_picker(items: list, rng: np.random.Generator, unknown_share: float | None, where: str):
    """The stream's next clip: the split's clips in rounds; or, with `unknown_share`, an
    `_unknown_` clip with that probability, else a word's, each kind in its own rounds (so a
    corpus with many distinct other words can stand in for one whose few are repeated)."""
    if unknown_share is None:
        return _Rounds(items, rng).next
    if not 0.0 <= unknown_share <= 1.0:
        raise DataError(f"unknown share {unknown_share:g} is not in [0, 1]")
    others = [e for e in items if e.label == UNKNOWN]
    words = [e for e in items if e.label != UNKNOWN]
    if (unknown_share > 0 and not others) or (unknown_share < 1 and not words):
        raise DataError(f"{where}: an unknown share of {unknown_share:g} needs both `{UNKNOWN}` "
                        "clips and word clips in the split")
    pools = (_Rounds(words, rng) if words else None, _Rounds(others, rng) if others else None)
    return lambda: pools[int(rng.random() < unknown_share)].next()


def write_truth(path: str | os.PathLike, words: list[Word]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["label", "onset_s", "offset_s"])
            for word in words:
                w.writerow([word.label, f"{word.onset_s:.4f}", f"{word.offset_s:.4f}"])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_truth(path: str | os.PathLike, default_length_s: float = 1.0) -> list[Word]:
    """`label,onset_s[,offset_s]` (header optional). A header `label,time_ms` (TensorFlow's
    streaming truth) is read in milliseconds. Without an offset a word lasts default_length_s."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such truth file; make one with `edgetune data stream`")
    scale = 1.0
    words = []
    with path.open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            row = [c.strip() for c in row]
            if not row or not any(row):
                continue
            if lineno == 1 and row[0].lower() == "label":
                if len(row) > 1 and row[1].lower().endswith("_ms"):
                    scale = 0.001
                continue
            try:
                onset = float(row[1]) * scale
                offset = (
                    float(row[2]) * scale if len(row) > 2 and row[2] else onset + default_length_s
                )
            except (IndexError, ValueError):
                raise DataError(
                    f"{path}:{lineno}: expected `label,onset_s[,offset_s]`, got {','.join(row)!r}"
                ) from None
            words.append(Word(row[0], onset, max(onset, offset)))
    return sorted(words, key=lambda w: w.onset_s)


# ---------------------------------------------------------------- evaluating


def stream_posteriors(
    rec: Recogniser, audio: np.ndarray, hop_ms: float, chunk: int = 16000
) -> list[tuple[float, np.ndarray]]:
    ps = PosteriorStream(rec, hop_ms)
    out = []
    for i in range(0, len(audio), chunk):
        out.extend(ps.push(audio[i : i + chunk]))
    return out


def decide(posteriors, labels: list[str], settings: StreamSettings) -> list[Detection]:
    d = Decider(labels, settings)
    found = []
    for t, p in posteriors:
        det = d.update(t, p)
        if det is not None:
            found.append(det)
    return found


def score_detections(
    detections: list[Detection],
    truth: list[Word],
    model_labels: list[str],
    audio_seconds: float,
    tolerance_ms: float = 750.0,
) -> dict:
    targets = set(model_labels) - set(NON_EVENTS)
    tol = tolerance_ms / 1000.0
    claimed = [False] * len(truth)
    correct = wrong = fa = 0
    latencies, from_onset, correct_words = [], [], []
    onsets = np.array([w.onset_s for w in truth])
    for det in sorted(detections, key=lambda d: d.time_s):
        hit = None
        # words with onset <= t, scanned from the earliest that can still be open
        last = int(np.searchsorted(onsets, det.time_s, side="right"))
        for j in range(last):
            if not claimed[j] and truth[j].offset_s + tol >= det.time_s:
                hit = j
                break
        if hit is None or truth[hit].label not in targets:
            fa += 1
            if hit is not None:
                claimed[hit] = True
            continue
        claimed[hit] = True
        if truth[hit].label == det.label:
            correct += 1
            correct_words.append(truth[hit])
            latencies.append(det.time_s - truth[hit].offset_s)
            from_onset.append(det.time_s - truth[hit].onset_s)
        else:
            wrong += 1
    n_words = sum(w.label in targets for w in truth)
    rejects = sum(1 for j, w in enumerate(truth) if w.label in targets and not claimed[j])
    words_per_label = Counter(w.label for w in truth if w.label in targets)
    correct_per_label = Counter(w.label for w in correct_words)
    hours = audio_seconds / 3600.0
    pct = (lambda x: 100.0 * x / n_words) if n_words else (lambda x: None)
    return {
        "words": n_words,
        "other_words": len(truth) - n_words,
        "detections": len(detections),
        "matched_pct": pct(correct + wrong),
        "correct_pct": pct(correct),
        "wrong_pct": pct(wrong),
        "false_positive_pct": pct(fa),
        "false_rejects": rejects,
        "false_reject_pct": pct(rejects),
        "correct": correct,
        "wrong": wrong,
        "false_accepts": fa,
        "false_accepts_per_hour": fa / hours if hours else None,
        "latency_ms_mean": 1000.0 * float(np.mean(latencies)) if latencies else None,
        "latency_from_onset_ms_mean": 1000.0 * float(np.mean(from_onset)) if from_onset else None,
        "audio_seconds": audio_seconds,
        "correct_pct_per_label": {
            lab: round(100.0 * correct_per_label[lab] / n, 1) for lab, n in sorted(words_per_label.items())
        },
    }


def _load(model, head: str | None = None) -> Recogniser:
    return one_head(model if isinstance(model, Recogniser) else load_model(model), head)


def stream_eval(
    model: Recogniser | str | os.PathLike,
    wav: str | os.PathLike,
    csv_path: str | os.PathLike,
    tolerance_ms: float = 750.0,
    hop_ms: float | None = None,
    average_ms: float | None = None,
    threshold: float | None = None,
    suppress_ms: float | None = None,
    head: str | None = None,
) -> dict:
    """Run the streaming engine over `wav` and score its detections against `csv_path`
    (one `head` of a merged model)."""
    rec = _load(model, head)
    settings = rec.stream.replace(
        hop_ms=hop_ms, average_ms=average_ms, threshold=threshold, suppress_ms=suppress_ms
    )
    check_settings(rec, settings)
    audio, truth = _audio_and_truth(rec, wav, csv_path)
    t0 = time.perf_counter()
    post = stream_posteriors(rec, audio, settings.hop_ms)
    dets = decide(post, rec.labels, settings)
    return _scored(rec, dets, truth, len(audio), settings, (wav, csv_path), tolerance_ms,
                   compute_s=time.perf_counter() - t0)


def _audio_and_truth(rec: Recogniser, wav, csv_path) -> tuple[np.ndarray, list[Word]]:
    fe = rec.frontend
    return (load_audio(wav, fe.sample_rate, max_seconds=MAX_LONG_SECONDS),
            read_truth(csv_path, default_length_s=fe.clip_seconds))


def _scored(rec: Recogniser, dets: list[Detection], truth: list[Word], n_samples: int,
            settings: StreamSettings, files: tuple, tolerance_ms: float, compute_s: float) -> dict:
    """`stream_eval`'s result: the detections scored against the truth, and what made them."""
    seconds = n_samples / rec.frontend.sample_rate
    r = score_detections(dets, truth, rec.labels, seconds, tolerance_ms)
    r.update(
        model=rec.path,
        precision=rec.precision,
        stream=str(files[0]),
        truth=str(files[1]),
        tolerance_ms=tolerance_ms,
        settings=settings.to_dict(),
        real_time_factor=compute_s / max(seconds, 1e-9),
        detection_list=[d.to_dict() for d in dets],
    )
    return r


def calibrate(
    model: Recogniser | str | os.PathLike,
    wav: str | os.PathLike,
    csv_path: str | os.PathLike,
    tolerance_ms: float = 750.0,
    max_fa_per_hour: float = 2.0,
    hop_ms: float | None = None,
    average_grid=GRID_AVERAGE_MS,
    threshold_grid=GRID_THRESHOLD,
    suppress_grid=GRID_SUPPRESS_MS,
    head: str | None = None,
) -> dict:
    """Best (average_ms, threshold, suppress_ms) on a stream: most correct detections with at
    most `max_fa_per_hour` false accepts per hour (ties: fewer false accepts, fewer wrong,
    lower latency). When no setting meets the bound, the one with the fewest false accepts."""
    rec = _load(model, head)
    hop = float(hop_ms if hop_ms is not None else rec.stream.hop_ms)
    check_settings(rec, rec.stream.replace(hop_ms=hop))
    audio, truth = _audio_and_truth(rec, wav, csv_path)
    seconds = len(audio) / rec.frontend.sample_rate
    t0 = time.perf_counter()
    post = stream_posteriors(rec, audio, hop)
    compute_s = time.perf_counter() - t0
    times = [t for t, _ in post]
    rows = []
    for avg in average_grid:
        # smoothing depends on the window only: once per window, then replay the decisions
        smoother = Decider(rec.labels, StreamSettings(hop_ms=hop, average_ms=float(avg)))
        smoothed = (
            np.stack([smoother.smooth(p) for _, p in post])
            if post
            else np.zeros((0, len(rec.labels)))
        )
        tops = smoothed.argmax(axis=1)
        scores = smoothed[np.arange(len(tops)), tops]
        for thr, sup in itertools.product(threshold_grid, suppress_grid):
            s = StreamSettings(
                hop_ms=hop, average_ms=float(avg), threshold=float(thr), suppress_ms=float(sup)
            )
            d = Decider(rec.labels, s)
            dets = [
                x
                for x in (d.decide(t, int(k), float(v)) for t, k, v in zip(times, tops, scores))
                if x is not None
            ]
            r = score_detections(dets, truth, rec.labels, seconds, tolerance_ms)
            keep = (
                "correct",
                "wrong",
                "false_accepts",
                "false_accepts_per_hour",
                "correct_pct",
                "false_rejects",
                "latency_ms_mean",
            )
            rows.append({"settings": s.to_dict(), **{k: r[k] for k in keep}})
    if not rows:
        raise EdgetuneError("calibration grid is empty")

    def key(row):
        lat = row["latency_ms_mean"] if row["latency_ms_mean"] is not None else float("inf")
        return (-row["correct"], row["false_accepts"], row["wrong"], lat)

    ok = [
        r
        for r in rows
        if r["false_accepts_per_hour"] is not None
        and r["false_accepts_per_hour"] <= max_fa_per_hour
    ]
    best = min(ok, key=key) if ok else min(rows, key=lambda r: (r["false_accepts"], *key(r)))
    chosen = rec.stream.replace(**{k: best["settings"][k] for k in TUNED_KEYS})  # what stream_eval would use
    full = _scored(rec, decide(post, rec.labels, chosen), truth, len(audio), chosen, (wav, csv_path),
                   tolerance_ms, compute_s)
    full.pop("detection_list")
    return {
        "best": best["settings"],
        "constraint_met": bool(ok),
        "max_fa_per_hour": max_fa_per_hour,
        "result": full,
        "grid_size": len(rows),
        "grid": sorted(rows, key=key)[:20],
        "note": None
        if seconds >= 1800
        else f"the stream is {seconds / 60:.1f} min long: one false accept is {3600 / seconds:.1f} per hour; use >= 30 min for a tighter bound",
    }


def save_calibration(model: str | os.PathLike, result: dict, wav: str | os.PathLike,
                     head: str | None = None) -> None:
    """Write what `calibrate` found into the model file (see `save_stream_settings`),
    with the stream and the figures it was chosen on; refused when no setting met the bound."""
    from edgetune.runtime.model import save_stream_settings

    if not result["constraint_met"]:
        raise EdgetuneError(f"no setting met <= {result['max_fa_per_hour']:g} false accepts an hour "
                            f"on {wav}; nothing saved into {model}")
    r = result["result"]
    save_stream_settings(model, StreamSettings.from_dict(result["best"]), head, calibrated={
        "stream": str(wav), "max_fa_per_hour": result["max_fa_per_hour"],
        "correct_pct": r["correct_pct"], "false_accepts_per_hour": r["false_accepts_per_hour"]})


def calibrate_on_split(model: str | os.PathLike, dataset: str | os.PathLike, split: str = "val",
                       minutes: float = 10.0, seed: int = 0, max_fa_per_hour: float = 2.0) -> dict:
    """Tune the model's stream settings on a `minutes`-long stream of `dataset`'s `split`
    voices (made in a temporary folder) and write them into the model file when a setting
    meets the false-accept bound; else the file keeps its settings. Export runs this on the
    validation voices: the fixed defaults suit no model (calibrated thresholds range 0.3-0.95),
    and at 0.7 a fresh model can hear nothing."""
    source = f"{dataset} ({split} split), {minutes:g} min, seed {seed}"
    rec = _load(model)
    with tempfile.TemporaryDirectory(prefix="edgetune-calibrate-") as tmp:
        wav, truth = Path(tmp) / "stream.wav", Path(tmp) / "stream.csv"
        made = make_stream(dataset, split=split, minutes=minutes, seed=seed, out_wav=wav, out_csv=truth)
        r = calibrate(rec, wav, truth, max_fa_per_hour=max_fa_per_hour)
    if r["constraint_met"]:
        save_calibration(model, r, source)
    found = r["result"]
    kept = r["best"] if r["constraint_met"] else rec.stream.to_dict()
    kept = {k: kept[k] for k in TUNED_KEYS}  # what the file holds
    return {"saved": r["constraint_met"], "settings": kept, "stream": source, "words": made["words"],
            "correct_pct": found["correct_pct"], "false_accepts_per_hour": found["false_accepts_per_hour"],
            "max_fa_per_hour": max_fa_per_hour}


def format_stream_calibration(r: dict) -> str:
    """One line on the stream settings an export wrote (`calibrate_on_split` or the defaults)."""
    s = r["settings"]
    chosen = f"average {s['average_ms']:g} ms, threshold {s['threshold']:g}, suppress {s['suppress_ms']:g} ms"
    if r["saved"]:
        return (f"stream settings tuned on {r['stream']} ({r['words']} words): {chosen}; "
                f"{r['correct_pct']:.1f}% found, {r['false_accepts_per_hour']:.1f} false accepts/hour")
    why = r.get("why") or (f"no setting kept <= {r['max_fa_per_hour']:g} false accepts an hour on "
                           f"{r['stream']}")
    return f"stream settings: the defaults ({chosen}); not tuned: {why}"


def format_eval(r: dict) -> str:
    s = r["settings"]

    def f(x):
        return "-" if x is None else f"{x:.1f}"

    return "\n".join(
        [
            f"model      {r['model']} ({r['precision']})",
            f"stream     {r['stream']} ({r['audio_seconds'] / 60:.1f} min), truth {r['truth']}: {r['words']} words"
            + (f" (+{r['other_words']} outside the vocabulary)" if r["other_words"] else ""),
            (
                f"settings   hop {s['hop_ms']:g} ms, average {s['average_ms']:g} ms, threshold {s['threshold']:g}, "
                f"suppress {s['suppress_ms']:g} ms, tolerance {r['tolerance_ms']:g} ms"
            ),
            (
                f"matched    {f(r['matched_pct'])}%  correct {f(r['correct_pct'])}%  wrong {f(r['wrong_pct'])}%  "
                f"false positives {f(r['false_positive_pct'])}% of words"
            ),
            (
                f"false      {r['false_accepts']} accepts ({f(r['false_accepts_per_hour'])} per hour), "
                f"{r['false_rejects']} rejects ({f(r['false_reject_pct'])}%)"
            ),
            (
                f"latency    {f(r['latency_ms_mean'])} ms after word end, {f(r['latency_from_onset_ms_mean'])} ms after its "
                "onset (mean of correct detections)"
            ),
            "per word   " + "  ".join(f"{lab} {pct:.0f}%" for lab, pct in r["correct_pct_per_label"].items()),
        ]
    )
