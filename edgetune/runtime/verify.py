"""Score an exported model on a labelled split: accuracy, per class, confusion, pass/fail.

Runs exactly what the device runs: load_audio -> numpy front end -> onnxruntime.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from edgetune.audio import load_audio
from edgetune.errors import EdgetuneError
from edgetune.frontend import clip_features
from edgetune.runtime.dataset import labelled_clips, normalise_split
from edgetune.runtime.model import Recogniser, load_model

DEFAULT_MIN_ACCURACY = 0.90


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
) -> dict:
    """Run one split of `data` (folder or CSV) through the model; a JSON-ready report.

    min_accuracy: None takes the model's goal (`edgetune.goal.min_accuracy`), else 0.90."""
    rec = model if isinstance(model, Recogniser) else load_model(model, threads=threads)
    split = normalise_split(split)
    pairs, mapped = labelled_clips(data, split, rec.labels)
    fe = rec.frontend
    if min_accuracy is None:
        min_accuracy = rec.min_accuracy if rec.min_accuracy is not None else DEFAULT_MIN_ACCURACY

    t0 = time.perf_counter()
    preds = np.empty(len(pairs), np.int64)
    truth = np.array([c for _, c in pairs], np.int64)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pairs), unit="clip", desc="verify", leave=False)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        feats = np.stack([clip_features(fe, load_audio(p, fe.sample_rate)) for p, _ in chunk])
        preds[start : start + len(chunk)] = rec.predict_features(feats).argmax(axis=1)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0

    report = score(truth, preds, rec.labels)
    report.update(
        passed=bool(report["accuracy"] >= min_accuracy),
        min_accuracy=float(min_accuracy),
        model=rec.path,
        precision=rec.precision,
        data=str(data),
        split=split,
        mapped_to_unknown=mapped,
        seconds=round(seconds, 3),
    )
    return report


def score(truth: np.ndarray, preds: np.ndarray, labels: list[str]) -> dict:
    """accuracy, n, confusion (rows: true, columns: predicted) and per-class figures."""
    k = len(labels)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (truth, preds), 1)
    n = int(len(truth))
    correct = int(np.trace(confusion))
    per_class = {}
    for i, lab in enumerate(labels):
        support = int(confusion[i].sum())
        predicted = int(confusion[:, i].sum())
        if support == 0 and predicted == 0:
            continue
        tp = int(confusion[i, i])
        precision = tp / predicted if predicted else None
        recall = tp / support if support else None
        f1 = (
            2 * precision * recall / (precision + recall)
            if precision is not None and recall is not None and precision + recall > 0
            else (0.0 if precision is not None and recall is not None else None)
        )
        per_class[lab] = {"precision": precision, "recall": recall, "f1": f1, "support": support, "predicted": predicted}
    return {
        "accuracy": correct / n if n else 0.0,
        "n": n,
        "correct": correct,
        "labels": list(labels),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def _pct(x) -> str:
    return "    -" if x is None else f"{100 * x:5.1f}"


def format_report(r: dict) -> str:
    """A human table: per class, then the confusion matrix of the classes that occur."""
    lines = [
        f"model     {r['model']} ({r['precision']})",
        f"data      {r['data']} [{r['split']}], {r['n']} clips"
        + (f"; mapped to _unknown_: {', '.join(r['mapped_to_unknown'])}" if r.get("mapped_to_unknown") else ""),
        "",
    ]
    width = max([5] + [len(lab) for lab in r["per_class"]])
    lines.append(f"{'class':<{width}}  precision  recall     f1  support")
    for lab, c in r["per_class"].items():
        lines.append(f"{lab:<{width}}      {_pct(c['precision'])}   {_pct(c['recall'])}  {_pct(c['f1'])}  {c['support']:7d}")
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
    verdict = "PASS" if r["passed"] else "FAIL"
    lines.append(
        f"accuracy  {100 * r['accuracy']:.2f}% ({r['correct']}/{r['n']}), goal {100 * r['min_accuracy']:.1f}%: {verdict}"
    )
    return "\n".join(lines)


def failure_message(r: dict) -> str:
    return (
        f"accuracy {100 * r['accuracy']:.2f}% is below the goal of {100 * r['min_accuracy']:.1f}% "
        f"({r['model']} on {r['data']} [{r['split']}]); fine-tune longer or with more data, "
        "or lower the goal with --min-accuracy"
    )


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
