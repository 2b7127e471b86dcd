"""`edgetune evaluate`: score a checkpoint (.pt, host front end) or an export (.onnx,
device path) on a dataset split: accuracy, per-class P/R/F1, confusion matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetune.data.dataset import ClipLoader, load_dataset, voices_of
from edgetune.errors import ModelError
from edgetune.frontend import FrontEnd
from edgetune.metrics import classification_report, per_speaker


def evaluate(model_path: str | Path, data: str | Path, split: str = "test", device: str = "cpu",
             progress: bool = False) -> dict:
    model_path = Path(model_path)
    if model_path.suffix == ".onnx":
        from edgetune.runtime.verify import verify

        return verify(model_path, data, split=split)
    if model_path.suffix != ".pt":
        raise ModelError(f"{model_path}: expected a .pt checkpoint or an .onnx export")
    from edgetune.train.checkpoint import load_checkpoint
    from edgetune.train.finetune import eval_checkpoint

    ckpt = load_checkpoint(model_path)
    fe = FrontEnd.from_dict(ckpt["frontend"])
    ds = load_dataset(data, labels=ckpt["labels"])
    examples = ds.split(split)
    clips = ClipLoader(fe).clips(examples, progress=progress)
    index = {lab: i for i, lab in enumerate(ckpt["labels"])}
    y_true = np.array([index[e.label] for e in examples])
    y_pred = eval_checkpoint(ckpt, clips, device)
    report = classification_report(y_true, y_pred, ckpt["labels"])
    report.update({"model": str(model_path), "split": split, "data": str(data),
                   "per_speaker": per_speaker([e.speaker for e in examples], y_true, y_pred),
                   "voices": voices_of(data),
                   "stage": ckpt["meta"]["stage"],
                   "precision": "int8 (QAT, torch)" if ckpt.get("quant") else "fp32 (torch)",
                   "mapped_to_unknown": ds.mapped_to_unknown})
    return report


def word_clips(ckpt: dict, data: str | Path, splits: tuple[str, ...]):
    """(dataset, [N, samples] clips, class indices) of the splits' word clips for the
    checkpoint's labels, `_silence_` left out (no word to find): what the probes in tools/
    score with `eval_checkpoint`."""
    from edgetune.data.dataset import SILENCE

    fe = FrontEnd.from_dict(ckpt["frontend"])
    ds = load_dataset(data, labels=ckpt["labels"])
    examples = [e for s in splits for e in ds.split(s) if e.label != SILENCE]
    index = {lab: i for i, lab in enumerate(ckpt["labels"])}
    return ds, ClipLoader(fe).clips(examples), np.array([index[e.label] for e in examples])


def save_confusion_png(report: dict, path: str | Path) -> str:
    from edgetune.report.plots import confusion_figure, save_figure

    title = f"{Path(report['model']).name} on {report.get('split', 'test')}: acc {report['accuracy']:.3f}"
    return save_figure(confusion_figure(report["confusion"], report["labels"], title), path)
