"""Score an exported model on a labelled split: accuracy, per class, confusion, pass/fail.

Runs exactly what the device runs: load_audio -> numpy front end -> onnxruntime.
"""

from __future__ import annotations

import os
import time

import numpy as np

from edgetune.data.dataset import ClipLoader, load_dataset
from edgetune.errors import DataError, EdgetuneError
from edgetune.frontend import log_mel
from edgetune.metrics import classification_report
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
    ds = load_dataset(data, labels=rec.labels)
    examples = ds.split(split)
    if not examples:
        raise DataError(f"{data}: no clips in the {split} split; try --split all")
    index = {lab: i for i, lab in enumerate(rec.labels)}
    fe = rec.frontend
    loader = ClipLoader(fe)
    if min_accuracy is None:
        min_accuracy = rec.min_accuracy if rec.min_accuracy is not None else DEFAULT_MIN_ACCURACY

    t0 = time.perf_counter()
    preds = np.empty(len(examples), np.int64)
    truth = np.array([index[e.label] for e in examples], np.int64)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(examples), unit="clip", desc="verify", leave=False)
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        feats = np.stack([log_mel(fe, loader.clip(e))[None] for e in chunk])
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
        mapped_to_unknown=ds.mapped_to_unknown,
        seconds=round(seconds, 3),
    )
    return report


def score(truth: np.ndarray, preds: np.ndarray, labels: list[str]) -> dict:
    """accuracy, n, correct, confusion (rows: true) and per-class figures."""
    return classification_report(truth, preds, labels)


def _pct(x) -> str:
    return "    -" if x is None else f"{100 * x:5.1f}"


def format_report(r: dict) -> str:
    """A human table: per class, then the confusion matrix of the classes that occur."""
    lines = [
        f"model     {r['model']} ({r['precision']})",
        f"data      {r['data']} [{r['split']}], {r['n']} clips"
        + (
            f"; mapped to _unknown_: {', '.join(r['mapped_to_unknown'])}"
            if r.get("mapped_to_unknown")
            else ""
        ),
        "",
    ]
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
    line = f"accuracy  {100 * r['accuracy']:.2f}% ({r['correct']}/{r['n']})"
    if "passed" in r:  # verify judges against a goal; evaluate only reports
        line += f", goal {100 * r['min_accuracy']:.1f}%: {'PASS' if r['passed'] else 'FAIL'}"
    lines.append(line)
    return "\n".join(lines)


def failure_message(r: dict) -> str:
    return (
        f"accuracy {100 * r['accuracy']:.2f}% is below the goal of {100 * r['min_accuracy']:.1f}% "
        f"({r['model']} on {r['data']} [{r['split']}]); fine-tune longer or with more data, "
        "or lower the goal with --min-accuracy"
    )
