"""Plots shared by evaluate, report and explain (matplotlib, Agg backend, atomic PNGs)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    _pyplot().close(fig)
    return str(path)


def confusion_figure(confusion, labels: list[str], title: str):
    plt = _pyplot()
    cm = np.asarray(confusion, float)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    size = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    return fig


def recall_figure(per_class: dict, title: str):
    plt = _pyplot()
    labels = list(per_class)
    recall = [per_class[lab]["recall"] for lab in labels]
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(labels) + 2), 3.2))
    ax.bar(labels, recall, color="#4c72b0")
    ax.set_ylim(0, 1.05)
    ax.axhline(0.9, color="#c44e52", ls="--", lw=1, label="goal 0.90")
    ax.set_ylabel("recall")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=60)
    ax.legend(loc="lower right")
    return fig
