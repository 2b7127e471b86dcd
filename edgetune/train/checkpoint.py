"""The checkpoint contract (DESIGN.md): a plain dict of tensors and JSON-like values.

Saved with torch.save, loaded with weights_only=True, written atomically. The
architecture is rebuilt from `arch` + `arch_config` (pruned widths included),
never unpickled.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import tempfile
from pathlib import Path

import torch

from edgetune import __version__
from edgetune.errors import ModelError
from edgetune.frontend import FrontEnd

FORMAT = "edgetune.checkpoint/1"
STAGES = ("base", "finetuned", "pruned", "qat")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_checkpoint(
    model: torch.nn.Module,
    *,
    labels: list[str],
    frontend: FrontEnd,
    stage: str,
    parent: dict | None = None,
    data: dict | None = None,
    recipe: dict | None = None,
    metrics: dict | None = None,
    quant: dict | None = None,
    extra_meta: dict | None = None,
    heads: list[dict] | None = None,
) -> dict:
    """Build the contract dict for `model` (which must carry `arch` and `arch_config`).

    `heads` (merged models only): [{"name", "labels"}] in output-column order; then
    `labels` is every head's labels side by side."""
    from edgetune.nets import count_macs, count_params

    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}")
    meta = {
        "stage": stage,
        "parent": parent,
        "data": data or {},
        "recipe": recipe or {},
        "metrics": metrics or {},
        "params": count_params(model),
        "macs": count_macs(model, (1, 1, frontend.n_frames, frontend.n_mels)),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "edgetune": __version__,
        "torch": torch.__version__.split("+")[0],
    }
    meta.update(extra_meta or {})
    head_entry = {"heads": [dict(h) for h in heads]} if heads else {}
    return {
        **head_entry,
        "format": FORMAT,
        "arch": model.arch,
        "arch_config": dict(model.arch_config),
        "labels": list(labels),
        "frontend": frontend.to_dict(),
        "state_dict": cpu_state(model),
        "quant": quant,
        "meta": meta,
    }


def cpu_state(model: torch.nn.Module) -> dict:
    """A detached CPU copy of `model.state_dict()` that keeps its `_metadata` (each module's
    version). Without it load_state_dict treats every module as version 1, and the int8
    observers then reset their `eps` buffer to float32's: a QAT model trained with the
    quantizer's eps (2**-12) came back from its checkpoint with another."""
    state = model.state_dict()
    copied = type(state)((k, v.detach().cpu().clone()) for k, v in state.items())
    copied._metadata = getattr(state, "_metadata", None)
    return copied


def save_checkpoint(ckpt: dict, path: str | os.PathLike) -> str:
    """Atomic write; returns the file's sha256 (the lineage link children record)."""
    atomic_torch_save(ckpt, path)
    return sha256_file(path)


def atomic_torch_save(obj: dict, path: str | os.PathLike) -> None:
    """torch.save to a temp file in the same folder, then os.replace: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load and validate a checkpoint dict (CPU tensors, weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint; pass a .pt written by edgetune")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (any unpickling failure means the same to the user)
        raise ModelError(f"{path}: not a loadable edgetune checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelError(f"{path}: not an edgetune checkpoint (format {FORMAT!r} missing); "
                         "make one with `edgetune finetune`")
    return ckpt


def model_from_checkpoint(ckpt: dict) -> torch.nn.Module:
    """Rebuild the float network from arch + arch_config and load its weights."""
    from edgetune.nets import create_model

    if ckpt.get("quant"):
        raise ModelError("this is a quantized (QAT) checkpoint; fine-tune or compress the float one "
                         "(finetuned.pt or pruned.pt), or export it with `edgetune export --onnx`")
    fe = FrontEnd.from_dict(ckpt["frontend"])
    model = create_model(ckpt["arch"], n_classes=len(ckpt["labels"]), n_frames=fe.n_frames,
                         n_mels=fe.n_mels, **ckpt["arch_config"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError:  # the network's layout changed since this checkpoint was written
        raise ModelError(f"this {ckpt['arch']} checkpoint's weights do not fit the {ckpt['arch']} network "
                         "of this edgetune version (an older layout); fine-tune it again from the base "
                         "in models/") from None
    return model


def lineage_link(path: str | os.PathLike, ckpt: dict) -> dict:
    """The `parent` entry a child stage records for this checkpoint file: its hash and stage,
    and its own parent link, so the whole chain travels with the newest file."""
    return {"sha256": sha256_file(path), "stage": ckpt["meta"]["stage"], "path": str(path),
            "parent": ckpt["meta"].get("parent")}
