"""`edgetune explain MODEL CLIP.wav`: which part of the log-mel made the model decide.

- a `.pt` checkpoint: gradient saliency, |d logit_top / d features|, smoothed over a
  small time x frequency neighbourhood (one backward pass);
- an `.onnx` export: occlusion saliency with onnxruntime; a patch of the log-mel is
  set to silence (the clip's quietest value), slid over time x frequency, and the
  drop in the top class's probability is what that patch mattered.
  `--method occlusion` does the same for a checkpoint (torch forward passes).

Returns the top classes with probabilities (softmax of the logits, so they sum to
at most 1) and draws spectrogram, saliency map and top-k bars in one PNG.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgetune.errors import ModelError

METHODS = ("auto", "gradient", "occlusion")
PATCH_MS = 100.0  # occlusion patch: 100 ms x 4 mel bins (10 frames at 10 ms hop)
PATCH_MELS = 4


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def smooth2d(a: np.ndarray, k: int = 3) -> np.ndarray:
    """Box blur (k x k, edge-padded): single-pixel gradient noise into readable regions."""
    if k <= 1:
        return a
    pad = k // 2
    p = np.pad(a, pad, mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(p, (k, k))
    return win.mean(axis=(-1, -2))


def occlusion_map(predict, feats: np.ndarray, target: int, patch: tuple[int, int],
                  stride: tuple[int, int] | None = None, batch: int = 256) -> np.ndarray:
    """[frames, mels] mean drop in P(target) over the patches covering each cell.

    predict: [B, 1, frames, mels] float32 -> probabilities [B, n_classes]."""
    T, M = feats.shape
    pt, pm = min(patch[0], T), min(patch[1], M)
    st, sm = stride or (max(1, pt // 2), max(1, pm // 2))
    base = float(predict(feats[None, None])[0, target])
    fill = float(feats.min())
    starts = [(t, m) for t in _starts(T, pt, st) for m in _starts(M, pm, sm)]
    drop = np.zeros((T, M))
    count = np.zeros((T, M))
    for i in range(0, len(starts), batch):
        chunk = starts[i : i + batch]
        x = np.repeat(feats[None, None], len(chunk), axis=0)
        for j, (t, m) in enumerate(chunk):
            x[j, 0, t : t + pt, m : m + pm] = fill
        p = predict(x)[:, target]
        for j, (t, m) in enumerate(chunk):
            drop[t : t + pt, m : m + pm] += base - float(p[j])
            count[t : t + pt, m : m + pm] += 1
    return np.maximum(drop / np.maximum(count, 1), 0.0)


def _starts(n: int, size: int, stride: int) -> list[int]:
    s = list(range(0, max(n - size, 0) + 1, stride))
    if s[-1] + size < n:
        s.append(n - size)
    return s


def _torch_model(ckpt: dict):
    if ckpt.get("quant"):
        from edgetune.compress.qat import qat_model_from_checkpoint

        return qat_model_from_checkpoint(ckpt).eval()
    from edgetune.train.checkpoint import model_from_checkpoint

    return model_from_checkpoint(ckpt).eval()


def gradient_saliency(model, feats: np.ndarray, target: int, smooth: int = 3) -> np.ndarray:
    import torch

    x = torch.tensor(feats[None, None], dtype=torch.float32, requires_grad=True)
    logits = model(x)
    logits[0, target].backward()
    g = x.grad[0, 0].abs().numpy().astype(np.float64)
    return smooth2d(g, smooth)


def explain(model_path: str | os.PathLike, clip: str | os.PathLike, top: int = 5,
            method: str = "auto") -> dict:
    """Top classes for CLIP and a [frames, mels] saliency map for the first of them."""
    from edgetune.audio import load_audio
    from edgetune.frontend import FrontEnd, clip_features

    model_path = Path(model_path)
    if method not in METHODS:
        raise ModelError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if model_path.suffix not in (".pt", ".onnx"):
        raise ModelError(f"{model_path}: expected a .pt checkpoint or an .onnx export")
    if model_path.suffix == ".onnx" and method == "gradient":
        raise ModelError(f"{model_path}: gradient saliency needs a .pt checkpoint; use "
                         "--method occlusion for an ONNX file (the default)")
    if not model_path.is_file():
        raise ModelError(f"{model_path}: no such model file; pass a .pt checkpoint or an .onnx "
                         "export written by edgetune")

    if model_path.suffix == ".onnx":
        from edgetune.runtime.model import load_model

        rec = load_model(model_path)
        fe, labels = rec.frontend, list(rec.labels)
        torch_model = None

        def predict(x):
            return softmax(rec.predict_features(x))
    else:
        import torch

        from edgetune.train.checkpoint import load_checkpoint

        ckpt = load_checkpoint(model_path)
        fe, labels = FrontEnd.from_dict(ckpt["frontend"]), list(ckpt["labels"])
        torch_model = _torch_model(ckpt)

        def predict(x):
            with torch.no_grad():
                return softmax(torch_model(torch.from_numpy(np.ascontiguousarray(x))).numpy())

    audio = load_audio(clip, fe.sample_rate)
    feats = clip_features(fe, audio)[0].astype(np.float32)  # [frames, mels]
    probs = predict(feats[None, None])[0]
    order = np.argsort(-probs)[: max(1, min(int(top), len(labels)))]
    target = int(order[0])
    used = "occlusion" if (model_path.suffix == ".onnx" or method == "occlusion") else "gradient"
    if used == "gradient":
        sal = gradient_saliency(torch_model, feats, target)
    else:
        patch_frames = max(1, round(PATCH_MS / fe.hop_ms))
        sal = occlusion_map(predict, feats, target, (patch_frames, PATCH_MELS))
    return {
        "model": str(model_path),
        "clip": str(clip),
        "method": used,
        "top": [{"label": labels[i], "probability": round(float(probs[i]), 6)} for i in order],
        "features": feats,
        "saliency": sal,
        "frontend": fe,
    }


def save_explanation(result: dict, out: str | os.PathLike) -> str:
    from edgetune.report.plots import saliency_figure, save_figure

    top = [(t["label"], t["probability"]) for t in result["top"]]
    title = (f"{Path(result['clip']).name} through {Path(result['model']).name} "
             f"({result['method']} saliency)")
    fig = saliency_figure(result["features"], result["saliency"], top, title, result["frontend"])
    return save_figure(fig, out)


def public(result: dict, png: str | None = None) -> dict:
    """The JSON-ready part of an explain result."""
    out = {k: result[k] for k in ("model", "clip", "method", "top")}
    out["saliency_png"] = png
    return out
