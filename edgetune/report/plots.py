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


# ------------------------------------------------------------------ run report

GOAL = 0.90
STAGE_COLOURS = {"base": "#8c8c8c", "finetuned": "#4c72b0", "pruned": "#dd8452", "int8": "#55a868"}


def stage_bytes(row: dict) -> int | None:
    """Deployed size of one stages.json row: int8 bytes for the int8 stage, else fp32 bytes."""
    if row.get("stage") == "int8":
        return row.get("int8_bytes") or row.get("fp32_bytes")
    return row.get("fp32_bytes") or (4 * row["params"] if row.get("params") else None)


def size_accuracy_figure(stages: list[dict], goal: float = GOAL):
    """Accuracy vs model size (log bytes), one labelled point per stage, joined in order."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    xs, ys = [], []
    for row in stages:
        size = stage_bytes(row)
        acc = row.get("test_accuracy")
        kind = "test"
        if acc is None:
            acc, kind = row.get("val_accuracy"), "val"
        if size is None or acc is None:
            continue
        xs.append(size)
        ys.append(acc)
        ax.scatter([size], [acc], s=60, zorder=3, color=STAGE_COLOURS.get(row["stage"], "#333"))
        ax.annotate(f"{row['stage']}\n{acc:.1%} {kind}, {size / 1024:.0f} kB", (size, acc),
                    textcoords="offset points", xytext=(6, 6), fontsize=8)
    if len(xs) > 1:
        ax.plot(xs, ys, color="#999", lw=1, zorder=2)
    ax.set_xscale("log")
    if xs:
        lo, hi = min(xs), max(xs)
        ax.set_xlim(lo / 1.8, hi * 2.5)
        lo_y = min(min(ys), goal)
        ax.set_ylim(max(0.0, lo_y - 0.08), min(1.02, max(ys) + 0.06))
    ax.axhline(goal, color="#c44e52", ls="--", lw=1, label=f"goal {goal:.2f}")
    ax.set_xlabel("model size (bytes, log scale)")
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy vs model size across stages")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    return fig


def training_figure(rows: list[dict]):
    """Loss and accuracy per epoch from log.jsonl rows."""
    plt = _pyplot()
    rows = [r for r in rows if r.get("epoch") is not None]
    ep = [r["epoch"] for r in rows]

    def col(key):
        return [r.get(key) if r.get(key) is not None else np.nan for r in rows]

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 3.4))
    a1.plot(ep, col("train_loss"), marker="o", ms=3, label="train loss")
    if any(r.get("val_loss") is not None for r in rows):
        a1.plot(ep, col("val_loss"), marker="o", ms=3, label="val loss")
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    a1.set_title("loss")
    a1.legend()
    a1.grid(alpha=0.3)
    a2.plot(ep, col("train_accuracy"), marker="o", ms=3, label="train")
    a2.plot(ep, col("val_accuracy"), marker="o", ms=3, label="val")
    a2.axhline(GOAL, color="#c44e52", ls="--", lw=1, label=f"goal {GOAL:.2f}")
    a2.set_ylim(0, 1.02)
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy")
    a2.set_title("accuracy")
    a2.legend(loc="lower right")
    a2.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def recall_compare_figure(per_class: dict, title: str, before: dict | None = None,
                          goal: float = GOAL):
    """Per-class recall against the goal; with `before`, the base model's recall beside it."""
    if not before:
        return recall_figure(per_class, title)
    plt = _pyplot()
    labels = list(per_class)
    x = np.arange(len(labels))
    after = [per_class[lab]["recall"] for lab in labels]
    prev = [before[lab]["recall"] if lab in before else np.nan for lab in labels]
    fig, ax = plt.subplots(figsize=(max(5.5, 0.6 * len(labels) + 3), 3.4))
    ax.bar(x - 0.2, prev, 0.4, color="#a9a9a9", label="before fine-tuning")
    ax.bar(x + 0.2, after, 0.4, color=["#4c72b0" if r >= goal else "#c44e52" for r in after],
           label="after")
    ax.set_xticks(x, labels, rotation=60, ha="right")
    ax.set_ylim(0, 1.05)
    ax.axhline(goal, color="#c44e52", ls="--", lw=1, label=f"goal {goal:.2f}")
    ax.set_ylabel("recall")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def bench_figure(bench: dict):
    """Latency (p50/p99) and real-time factor against the device profile's budgets,
    plus every budget as a share of its limit (pass green, over red)."""
    plt = _pyplot()
    device = bench.get("device") or {}
    checks = bench.get("checks") or []
    n = 3 if checks else 2
    fig, axes = plt.subplots(1, n, figsize=(4.0 * n, 3.6),
                             gridspec_kw={"width_ratios": [2, 1, 2][:n]})
    ax = axes[0]
    groups = [(k, bench.get(k)) for k in ("latency_1_thread", "latency_device_threads")]
    groups = [(k, v) for k, v in groups if v]
    x = np.arange(len(groups))
    p50 = [v["p50_ms"] for _, v in groups]
    p99 = [v["p99_ms"] for _, v in groups]
    ax.bar(x - 0.2, p50, 0.4, label="p50", color="#4c72b0")
    ax.bar(x + 0.2, p99, 0.4, label="p99", color="#dd8452")
    ax.set_xticks(x, [f"{v.get('threads')} thread{'s' if v.get('threads') != 1 else ''}"
                      for _, v in groups])
    if device.get("latency_budget_ms"):
        ax.axhline(device["latency_budget_ms"], color="#c44e52", ls="--", lw=1,
                   label=f"budget {device['latency_budget_ms']:g} ms (p99)")
    ax.set_ylabel("ms per inference (batch 1)")
    ax.set_title("inference latency")
    ax.legend(fontsize=8)
    ax = axes[1]
    rtf = (bench.get("stream") or {}).get("real_time_factor")
    if rtf is not None:
        budget = device.get("rtf_budget")
        ok = budget is None or rtf <= budget
        ax.bar([0], [rtf], 0.5, color="#55a868" if ok else "#c44e52")
        ax.text(0, rtf, f"{rtf:.4f}", ha="center", va="bottom", fontsize=8)
        if budget:
            ax.axhline(budget, color="#c44e52", ls="--", lw=1, label=f"budget {budget:g}")
            ax.legend(fontsize=8)
        ax.set_xlim(-1, 1)
    ax.set_xticks([])
    ax.set_ylabel("compute time / audio time")
    ax.set_title("real-time factor")
    if checks:
        ax = axes[2]
        names = [c["budget"] for c in checks]
        share = [c["value"] / c["limit"] if c["limit"] else np.nan for c in checks]
        y = np.arange(len(checks))
        ax.barh(y, share, color=["#55a868" if c["passed"] else "#c44e52" for c in checks])
        for i, c in enumerate(checks):
            ax.text(share[i], i, f" {c['value']:g} / {c['limit']:g} {c['unit']}", va="center",
                    fontsize=7)
        ax.axvline(1.0, color="#c44e52", ls="--", lw=1)
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlim(0, max(1.6, np.nanmax(share) * 1.6 if share else 1.6))
        ax.set_xlabel("share of budget (1.0 = limit)")
        ax.set_title(f"budgets of {device.get('name', 'device')}: "
                     f"{'PASS' if bench.get('passed') else 'FAIL'}")
    fig.tight_layout()
    return fig


def timeline_figure(detections: list[dict], truth: list[dict], seconds: float = 120.0,
                    tolerance_s: float = 0.75):
    """Truth words as spans and detections as markers on one row per label, first `seconds`."""
    plt = _pyplot()
    truth = [w for w in truth if w["onset_s"] < seconds]
    detections = [d for d in detections if d["time_s"] < seconds]
    labels = sorted({w["label"] for w in truth} | {d["label"] for d in detections})
    row = {lab: i for i, lab in enumerate(labels)}
    fig, ax = plt.subplots(figsize=(12, max(2.5, 0.35 * len(labels) + 1.2)))
    for w in truth:
        off = w.get("offset_s")
        off = w["onset_s"] + 1.0 if off is None else off
        ax.broken_barh([(w["onset_s"], max(off - w["onset_s"], 0.05))], (row[w["label"]] - 0.35, 0.7),
                       color="#c6d7ee", edgecolor="#4c72b0", lw=0.5)
    hit_x, hit_y, miss_x, miss_y = [], [], [], []
    for d in detections:
        ok = any(w["label"] == d["label"] and w["onset_s"] <= d["time_s"]
                 <= (w.get("offset_s") or w["onset_s"] + 1.0) + tolerance_s for w in truth)
        (hit_x if ok else miss_x).append(d["time_s"])
        (hit_y if ok else miss_y).append(row[d["label"]])
    ax.scatter(hit_x, hit_y, marker="v", color="#55a868", s=40, zorder=3, label="detection, matches truth")
    ax.scatter(miss_x, miss_y, marker="x", color="#c44e52", s=40, zorder=3, label="detection, no match")
    ax.broken_barh([], (0, 0), color="#c6d7ee", edgecolor="#4c72b0", label="truth word")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(-0.7, len(labels) - 0.3)
    end = max([w.get("offset_s") or w["onset_s"] + 1.0 for w in truth]
              + [d["time_s"] for d in detections] + [0.0]) + 1.0
    ax.set_xlim(0, min(seconds, end))
    ax.set_xlabel("time (s)")
    ax.set_title(f"streaming detections, first {min(seconds, end):.0f} s")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3, fontsize=8, frameon=False)
    return fig


# ------------------------------------------------------------------ explain


def saliency_figure(features: np.ndarray, saliency: np.ndarray, top: list[tuple[str, float]],
                    title: str, frontend=None):
    """Log-mel spectrogram above its saliency map (time on x, mel bin on y), top classes beside."""
    plt = _pyplot()
    feats = np.asarray(features, float)
    sal = np.asarray(saliency, float)
    sal = sal / sal.max() if sal.size and sal.max() > 0 else np.zeros_like(sal)  # relative
    fig = plt.figure(figsize=(10, 5.6))
    gs = fig.add_gridspec(2, 2, width_ratios=[3, 1.3], hspace=0.35, wspace=0.3)
    hop_s = frontend.hop_ms / 1000 if frontend is not None else 0.01
    extent = [0, feats.shape[0] * hop_s, 0, feats.shape[1]]
    a1 = fig.add_subplot(gs[0, 0])
    im = a1.imshow(feats.T, origin="lower", aspect="auto", cmap="magma", extent=extent)
    a1.set_title("log-mel spectrogram")
    a1.set_ylabel("mel bin")
    fig.colorbar(im, ax=a1, pad=0.01)
    a2 = fig.add_subplot(gs[1, 0], sharex=a1)
    im = a2.imshow(sal.T, origin="lower", aspect="auto", cmap="inferno", extent=extent,
                   vmin=0, vmax=1)
    a2.contour(np.linspace(extent[0], extent[1], feats.shape[0]), np.arange(feats.shape[1]) + 0.5,
               feats.T, levels=3, colors="white", linewidths=0.3, alpha=0.5)
    a2.set_title(f"saliency for '{top[0][0]}' (relative to its maximum)")
    a2.set_xlabel("time (s)")
    a2.set_ylabel("mel bin")
    fig.colorbar(im, ax=a2, pad=0.01)
    a3 = fig.add_subplot(gs[:, 1])
    names = [t[0] for t in top][::-1]
    probs = [t[1] for t in top][::-1]
    a3.barh(names, probs, color=["#4c72b0"] * (len(top) - 1) + ["#dd8452"])
    for i, p in enumerate(probs):
        a3.text(p, i, f" {p:.1%}", va="center", fontsize=8)
    a3.set_xlim(0, 1.15)
    a3.set_xlabel("probability")
    a3.set_title(f"top {len(top)} classes")
    fig.suptitle(title, fontsize=10)
    return fig
