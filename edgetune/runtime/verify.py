"""Score an exported model on a labelled split: accuracy, per class, confusion, pass/fail.

Runs exactly what the device runs: load_audio -> numpy front end -> onnxruntime.
"""

from __future__ import annotations

import os
import time

import numpy as np

from edgetune.audio import probe
from edgetune.data.dataset import SILENCE, ClipLoader, load_dataset, voices_of
from edgetune.errors import DataError, EdgetuneError
from edgetune.frontend import log_mel
from edgetune.metrics import classification_report, per_speaker
from edgetune.runtime.level import peak_level_db
from edgetune.runtime.model import Recogniser, load_model, one_head, softmax

DEFAULT_MIN_ACCURACY = 0.90
# The answer of a clip under --min-confidence (or too quiet, for a model without
# `_silence_`): a column of its own in the confusion, always counted wrong.
UNSURE = "_unsure_"


class GoalNotMet(EdgetuneError):
    """The model scored below its accuracy goal (verify exits 1)."""


def verify(
    model: Recogniser | str | os.PathLike,
    data: str | os.PathLike,
    split: str = "test",
    min_accuracy: float | None = None,
    batch_size: int = 64,
    threads: int | None = None,
    progress: bool = False,
    min_level_db: float | None = None,
    min_confidence: float = 0.0,
    max_seconds: float | None = None,
    head: str | None = None,
) -> dict:
    """Run one split of `data` (folder or CSV) through the model; a JSON-ready report.

    min_accuracy: None takes the model's goal (`edgetune.goal.min_accuracy`), else 0.90.
    Input limits (off by default): a clip whose loudest 100 ms is under `min_level_db`
    dBFS is answered `_silence_` without running the model; an answer less sure than
    `min_confidence` is `_unsure_` (wrong); clips longer than `max_seconds` are skipped
    and listed under `skipped`. A merged model is scored one `head` at a time."""
    rec = one_head(model if isinstance(model, Recogniser) else load_model(model, threads=threads), head)
    ds = load_dataset(data, labels=rec.labels)
    examples, skipped = _within_length(ds.split(split), max_seconds)
    if skipped and all(e.noise_position is not None for e in examples):
        raise DataError(
            f"{data}: all {len(skipped)} clips of the {split} split are longer than "
            f"{max_seconds:g} s (e.g. {skipped[0]['path']}, {skipped[0]['seconds']:.1f} s); "
            "raise --max-seconds or cut the clips"
        )
    if not examples:
        raise DataError(f"{data}: no clips in the {split} split; try --split all")
    fe = rec.frontend
    loader = ClipLoader(fe)
    if min_accuracy is None:
        min_accuracy = rec.min_accuracy if rec.min_accuracy is not None else DEFAULT_MIN_ACCURACY
    labels = list(rec.labels)
    if min_confidence > 0 or (min_level_db is not None and SILENCE not in labels):
        labels.append(UNSURE)
    index = {lab: i for i, lab in enumerate(labels)}
    quiet_answer = index.get(SILENCE, index.get(UNSURE))

    t0 = time.perf_counter()
    preds = np.empty(len(examples), np.int64)
    truth = np.array([index[e.label] for e in examples], np.int64)
    n_quiet = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(examples), unit="clip", desc="verify", leave=False)
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        clips = [loader.clip(e) for e in chunk]
        loud = np.ones(len(clips), bool)
        if min_level_db is not None:
            loud = np.array([peak_level_db(c, fe.sample_rate) >= min_level_db for c in clips])
        out = np.empty(len(clips), np.int64)
        if not loud.all():
            out[~loud] = quiet_answer
        if loud.any():
            feats = np.stack([log_mel(fe, c)[None] for c, ok in zip(clips, loud) if ok])
            proba = softmax(rec.predict_features(feats))
            answer = proba.argmax(axis=1)
            if min_confidence > 0:
                answer[proba.max(axis=1) < min_confidence] = index[UNSURE]
            out[loud] = answer
        n_quiet += int((~loud).sum())
        preds[start : start + len(chunk)] = out
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0

    report = score(truth, preds, labels)
    report["per_class"].pop(UNSURE, None)  # an answer, never a true class
    report.update(
        per_speaker=per_speaker([e.speaker for e in examples], truth, preds),
        passed=bool(report["accuracy"] >= min_accuracy),
        min_accuracy=float(min_accuracy),
        model=rec.path,
        precision=rec.precision,
        data=str(data),
        voices=voices_of(data),
        split=split,
        mapped_to_unknown=ds.mapped_to_unknown,
        seconds=round(seconds, 3),
        limits={
            "min_level_db": min_level_db,
            "min_confidence": min_confidence,
            "max_seconds": max_seconds,
        },
        quiet=n_quiet,
        unsure=int((preds == index[UNSURE]).sum()) if UNSURE in index else 0,
        skipped=skipped,
    )
    return report


def _within_length(examples: list, max_seconds: float | None) -> tuple[list, list[dict]]:
    """The examples no longer than `max_seconds` (header only, nothing decoded), and the
    skipped ones as {path, seconds}. Silence cut from background noise is never skipped."""
    if max_seconds is None:
        return examples, []
    keep, skipped = [], []
    for e in examples:
        if e.noise_position is None and (secs := probe(e.path).seconds) > max_seconds:
            skipped.append({"path": e.path, "seconds": round(secs, 3)})
        else:
            keep.append(e)
    return keep, skipped


def score(truth: np.ndarray, preds: np.ndarray, labels: list[str]) -> dict:
    """accuracy, n, correct, confusion (rows: true) and per-class figures."""
    return classification_report(truth, preds, labels)


def _pct(x) -> str:
    return "    -" if x is None else f"{100 * x:5.1f}"


def format_report(r: dict) -> str:
    """A human table: per class, then the confusion matrix of the classes that occur."""
    lines = [
        f"model     {r['model']} ({r['precision']})",
        f"data      {r['data']} [{r['split']}], {r['n']} clips of {r['voices']} voices"
        + (
            f"; mapped to _unknown_: {', '.join(r['mapped_to_unknown'])}"
            if r.get("mapped_to_unknown")
            else ""
        ),
        "",
    ]
    lines += _limit_lines(r)
    width = max([5] + [len(lab) for lab in r["per_class"]])
    lines.append(f"{'class':<{width}}  precision  recall     f1  support")
    for lab, c in r["per_class"].items():
        lines.append(
            f"{lab:<{width}}      {_pct(c['precision'])}   {_pct(c['recall'])}  {_pct(c['f1'])}  {c['support']:7d}"
        )
    lines.append("")
    labels = r["labels"]
    conf = np.asarray(r["confusion"])
    shown = [i for i in range(len(labels)) if conf[i].sum() or conf[:, i].sum()]
    cw = max([5] + [len(str(int(conf.max())))] + [min(len(labels[i]), 8) for i in shown])
    lines.append("confusion (rows: true, columns: predicted)")
    lines.append(" " * (width + 1) + " ".join(f"{labels[i][:8]:>{cw}}" for i in shown))
    for i in shown:
        lines.append(f"{labels[i]:<{width}} " + " ".join(f"{int(conf[i, j]):>{cw}}" for j in shown))
    lines.append("")
    lines += _speaker_lines(r.get("per_speaker") or {})
    line = f"accuracy  {100 * r['accuracy']:.2f}% ({r['correct']}/{r['n']})"
    if "passed" in r:  # verify judges against a goal; evaluate only reports
        line += f", goal {100 * r['min_accuracy']:.1f}%: {'PASS' if r['passed'] else 'FAIL'}"
    lines.append(line)
    return "\n".join(lines)


# More speakers than this (a synthetic corpus's hundreds of voices) and only the worst show.
MAX_SPEAKERS_SHOWN = 12


def _speaker_lines(speakers: dict) -> list[str]:
    """Accuracy per speaker, worst first (a real set's few people; a corpus's worst voices)."""
    if len(speakers) < 2:
        return []
    shown = list(speakers.items())[:MAX_SPEAKERS_SHOWN]
    head = ("per speaker" if len(speakers) <= MAX_SPEAKERS_SHOWN
            else f"per speaker, the worst {len(shown)} of {len(speakers)}")
    width = max(len(name) for name, _ in shown)
    return [head] + [f"  {name:<{width}}  {100 * c['accuracy']:5.1f}%  ({c['correct']}/{c['n']})"
                     for name, c in shown] + [""]


def _limit_lines(r: dict) -> list[str]:
    """What the input limits did, when the user set any."""
    lim = r.get("limits") or {}
    out = []
    if lim.get("min_level_db") is not None:
        out.append(f"{r['quiet']} clips under {lim['min_level_db']:g} dBFS: answered silence")
    if lim.get("min_confidence"):
        out.append(
            f"{r['unsure']} answers under confidence {lim['min_confidence']:g}: "
            f"{UNSURE} (counted wrong)"
        )
    if r.get("skipped"):
        shown = ", ".join(f"{s['path']} ({s['seconds']:.1f} s)" for s in r["skipped"][:5])
        more = f" and {len(r['skipped']) - 5} more" if len(r["skipped"]) > 5 else ""
        out.append(
            f"skipped {len(r['skipped'])} clips longer than {lim['max_seconds']:g} s: {shown}{more}"
        )
    return out + [""] if out else []


def failure_message(r: dict) -> str:
    return (
        f"accuracy {100 * r['accuracy']:.2f}% is below the goal of {100 * r['min_accuracy']:.1f}% "
        f"({r['model']} on {r['data']} [{r['split']}]); fine-tune longer or with more data, "
        "or lower the goal with --min-accuracy"
    )
