"""Classification figures from labels and predictions (numpy only; both sides use it)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """[true, predicted] counts."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def classification_report(y_true, y_pred, labels: list[str]) -> dict:
    """accuracy, n, per-class precision/recall/f1/support, confusion, labels (JSON-ready)."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    cm = confusion_matrix(y_true, y_pred, len(labels))
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall,
                   out=np.zeros_like(tp), where=(precision + recall) > 0)
    per_class = {
        lab: {"precision": float(precision[i]), "recall": float(recall[i]),
              "f1": float(f1[i]), "support": int(support[i]),
              "predicted": int(predicted[i])}
        for i, lab in enumerate(labels)
    }
    n = len(y_true)
    return {
        "accuracy": float(tp.sum() / n) if n else None,
        "n": n,
        "correct": int(tp.sum()),
        "per_class": per_class,
        "confusion": cm.tolist(),
        "labels": list(labels),
    }


def per_speaker(speakers: list[str], y_true, y_pred) -> dict:
    """{speaker: {"n", "correct", "accuracy"}}, worst first: which people a model fails."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    names = np.asarray(speakers)
    out = {}
    for name in np.unique(names):
        mine = names == name
        hit = y_true[mine] == y_pred[mine]
        out[str(name)] = {"n": int(hit.size), "correct": int(hit.sum()), "accuracy": float(hit.mean())}
    return dict(sorted(out.items(), key=lambda kv: (kv[1]["accuracy"], kv[0])))
