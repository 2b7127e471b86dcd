"""Audio CNNs for log-mel features [batch, 1, n_frames, n_mels] -> logits [batch, n_classes].

Every model built here has:
- `arch`: its registry name; `arch_config`: a JSON-able dict (read back from the
  modules, so pruned widths are included) with which
  `create_model(arch, n_classes=, n_frames=, n_mels=, **arch_config)` rebuilds it;
- `blocks`: nn.ModuleList, the stem then each stage (for `finetune --freeze N`);
- `features(x)`: the pooled embedding [batch, emb]; `classifier`: the final
  nn.Linear(emb, n_classes); `forward(x) = classifier(features(x))`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from edgetune.errors import ModelError
from edgetune.frontend import FrontEnd
from edgetune.nets import bcresnet as _bcresnet
from edgetune.nets import dscnn as _dscnn
from edgetune.nets import multihead as _multihead
from edgetune.nets import sembed as _sembed
from edgetune.nets.bcresnet import BCResNet, SubSpectralNorm
from edgetune.nets.dscnn import DSCNN
from edgetune.nets.sembed import SpeechEmbeddingNet

__all__ = [
    "DSCNN",
    "BCResNet",
    "SpeechEmbeddingNet",
    "SubSpectralNorm",
    "available_models",
    "count_macs",
    "count_params",
    "create_model",
    "describe",
    "model_info",
]

RESERVED = ("n_classes", "n_frames", "n_mels")


@dataclass(frozen=True)
class _Entry:
    cls: Callable[..., nn.Module]
    defaults: dict
    description: str
    frontend: str = "speech"  # the FrontEnd preset the net takes


_REGISTRY: dict[str, _Entry] = {
    "dscnn-s": _Entry(DSCNN, _dscnn.CONFIGS["dscnn-s"],
                      "DS-CNN small (Hello Edge): 10x4 conv + 4 depthwise-separable blocks, 64 ch"),
    "dscnn-m": _Entry(DSCNN, _dscnn.CONFIGS["dscnn-m"],
                      "DS-CNN medium (Hello Edge): 10x4 conv + 4 depthwise-separable blocks, 172 ch"),
    "dscnn-l": _Entry(DSCNN, _dscnn.CONFIGS["dscnn-l"],
                      "DS-CNN large (Hello Edge): 10x4 conv + 5 depthwise-separable blocks, 276 ch"),
    "bcresnet-1": _Entry(BCResNet, _bcresnet.CONFIGS["bcresnet-1"],
                         "BC-ResNet-1 (Qualcomm): broadcasted residual blocks + SubSpectralNorm"),
    "bcresnet-2": _Entry(BCResNet, _bcresnet.CONFIGS["bcresnet-2"],
                         "BC-ResNet-2 (Qualcomm): broadcasted residual blocks + SubSpectralNorm"),
    "bcresnet-3": _Entry(BCResNet, _bcresnet.CONFIGS["bcresnet-3"],
                         "BC-ResNet-3 (Qualcomm): broadcasted residual blocks + SubSpectralNorm"),
    "bcresnet-8": _Entry(BCResNet, _bcresnet.CONFIGS["bcresnet-8"],
                         "BC-ResNet-8 (Qualcomm): broadcasted residual blocks + SubSpectralNorm"),
    "sembed": _Entry(SpeechEmbeddingNet, _sembed.CONFIGS["sembed"],
                     "Google speech_embedding trunk (trained on real speech; frozen) + MLP head; "
                     "32 Slaney mels", frontend="sembed"),
}


def available_models() -> list[str]:
    """Registry names, in a stable order."""
    return list(_REGISTRY)


def frontend_preset(name: str) -> str:
    """The FrontEnd preset a registry net is built for (a fresh one needs its input)."""
    entry = _REGISTRY.get(name)
    return entry.frontend if entry else "speech"


def create_model(name: str, n_classes: int, n_frames: int = 98, n_mels: int = 40,
                 **arch_config) -> nn.Module:
    """Build `name` for `n_classes` outputs; `arch_config` overrides the defaults
    (a model's own `arch_config`, pruned widths included, rebuilds it exactly)."""
    if name == _multihead.ARCH:  # composite: heads of a registry net on one trunk (edgetune merge)
        return _build(_multihead.MultiHead, name, n_classes, n_frames, n_mels, arch_config)
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(_REGISTRY)}")
    if int(n_classes) < 1:
        raise ModelError(f"n_classes must be >= 1, got {n_classes}")
    bad = set(arch_config) - set(entry.defaults)
    if bad:
        raise ModelError(f"{name}: unknown arch_config keys {sorted(bad)}; "
                         f"known: {sorted(entry.defaults)}")
    return _build(entry.cls, name, n_classes, n_frames, n_mels, {**entry.defaults, **arch_config})


def _build(cls, name: str, n_classes: int, n_frames: int, n_mels: int, cfg: dict) -> nn.Module:
    try:
        model = cls(int(n_classes), int(n_frames), int(n_mels), **cfg)
    except (ValueError, TypeError) as e:
        raise ModelError(f"{name}: cannot build from arch_config {cfg}: {e}") from None
    model.arch = name
    return model


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape=(1, 1, 98, 40)) -> int:
    """Multiply-accumulates of every Conv/Linear for one forward pass of `input_shape`
    (batch included: pass batch 1 for per-example MACs). Measured with forward hooks."""
    total = 0

    def conv_hook(m: nn.modules.conv._ConvNd, inp, out):
        nonlocal total
        k = 1
        for s in m.kernel_size:
            k *= s
        total += out.numel() * (m.in_channels // m.groups) * k

    def linear_hook(m: nn.Linear, inp, out):
        nonlocal total
        total += out.numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    p = next(model.parameters(), None)
    x = torch.zeros(tuple(input_shape), device=p.device if p is not None else "cpu",
                    dtype=p.dtype if p is not None and p.is_floating_point() else torch.float32)
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)


def model_info(name: str, n_classes: int = 12) -> dict:
    """{name, params, macs, description, input} of a freshly built `name`, on its front end's 1-s clip."""
    fe = FrontEnd.preset(frontend_preset(name))
    model = create_model(name, n_classes, fe.n_frames, fe.n_mels)
    return {"name": name, "params": count_params(model),
            "macs": count_macs(model, (1, 1, fe.n_frames, fe.n_mels)),
            "description": _REGISTRY[name].description, "input": [fe.n_frames, fe.n_mels]}


def describe(n_classes: int = 12) -> str:
    """A table for `edgetune models`: name, params, MACs (per 1-s clip), description."""
    rows = [model_info(n, n_classes) for n in _REGISTRY]
    lines = [f"{'model':<11} {'params':>8} {'MACs':>8}  description",
             f"{'':<11} {'':>8} {'':>8}  ({n_classes} classes, 1-s clips)"]
    for r in rows:
        lines.append(f"{r['name']:<11} {_si(r['params']):>8} {_si(r['macs']):>8}  {r['description']}")
    return "\n".join(lines)


def _si(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)
