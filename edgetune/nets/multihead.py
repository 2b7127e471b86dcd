"""Several recognisers on one trunk (`edgetune merge`).

A `MultiHead` holds one net of a registry architecture per head. The first
`shared` blocks are the same module objects in every head, so they run once;
each head then runs its own remaining blocks, pooling and classifier. Its output
is the heads' logits side by side, [batch, sum(n_classes)], so training,
pruning and quantization see one ordinary tensor; `head_slices` says which
columns belong to which head, and the ONNX export names each slice
`logits_<head>`.

Widths follow the registry's convention (one entry per block), flattened: the
shared blocks' widths, then each head's own blocks' widths. So
`arch_config["channels"]`, read back from the modules, follows pruning like any
other net's.

Heads may differ in their input normalisation (`head_cmn`: band means removed
or not, per head): the trunk's weights stay shared, and it runs once per
distinct normalisation (the inputs stacked along the batch), so a vowels head
keeps the band means a word head removes.
"""

from __future__ import annotations

import torch
from torch import nn

ARCH = "multihead"


class MultiHead(nn.Module):
    def __init__(self, n_classes: int, n_frames: int = 98, n_mels: int = 40, *, base: str,
                 base_config: dict, shared: int, heads: list, channels: list[int],
                 head_cmn: list[bool] | None = None):
        from edgetune.nets import create_model

        super().__init__()
        heads = [(str(name), int(n)) for name, n in heads]
        if len(heads) < 2:
            raise ValueError("a multi-head model needs at least two heads")
        if len({name for name, _ in heads}) != len(heads):
            raise ValueError(f"head names must differ: {[name for name, _ in heads]}")
        if sum(n for _, n in heads) != int(n_classes):
            raise ValueError(f"heads have {sum(n for _, n in heads)} classes in all, not {n_classes}")
        n_blocks = len(create_model(base, 1, n_frames, n_mels, **base_config).blocks)
        shared = int(shared)
        if not 0 <= shared <= n_blocks:
            raise ValueError(f"shared must be 0..{n_blocks}, got {shared}")
        if len(channels) != shared + len(heads) * (n_blocks - shared):
            raise ValueError("channels: one width per shared block, then one per block of each head")
        if head_cmn is not None and len(head_cmn) != len(heads):
            raise ValueError(f"head_cmn: one entry per head ({len(heads)}), got {len(head_cmn)}")
        own = n_blocks - shared
        nets = []
        for i, (_, n) in enumerate(heads):
            widths = list(channels[:shared]) + list(channels[shared + i * own: shared + (i + 1) * own])
            config = dict(base_config) if head_cmn is None else {**base_config, "cmn": bool(head_cmn[i])}
            net = create_model(base, n, n_frames, n_mels, **config, channels=widths)
            for j in range(shared):  # the trunk: the same modules in every head
                if nets:
                    net.blocks[j] = nets[0].blocks[j]
            nets.append(net)
        self.nets = nn.ModuleList(nets)
        self.names = [name for name, _ in heads]
        self.base, self.base_config, self.shared = base, dict(base_config), shared
        self.head_cmn = None if head_cmn is None else [bool(c) for c in head_cmn]
        self.n_frames, self.n_mels = int(n_frames), int(n_mels)

    # -- the registry interface (arch_config, blocks, classifier, width_modules) --
    @property
    def arch_config(self) -> dict:
        config = {"base": self.base, "base_config": dict(self.base_config), "shared": self.shared,
                  "heads": [[name, net.classifier.out_features] for name, net in zip(self.names, self.nets)],
                  "channels": [m.out_channels for m in self.width_modules()]}
        if self.head_cmn is not None:
            config["head_cmn"] = list(self.head_cmn)
        return config

    def width_modules(self) -> list[nn.Module]:
        trunk = self.nets[0].width_modules()[: self.shared]
        return trunk + [m for net in self.nets for m in net.width_modules()[self.shared:]]

    @property
    def blocks(self) -> nn.ModuleList:
        """The shared blocks (what `finetune --freeze N` counts)."""
        return nn.ModuleList(list(self.nets[0].blocks[: self.shared]))

    @property
    def classifier(self) -> nn.ModuleList:
        return nn.ModuleList([net.classifier for net in self.nets])

    @property
    def head_slices(self) -> list[tuple[int, int]]:
        return slices_of(self.arch_config)

    def input_norms(self) -> list[bool | None]:
        """Each head's input normalisation (None: all follow base_config)."""
        return self.head_cmn if self.head_cmn is not None else [None] * len(self.nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norms = self.input_norms()
        distinct = list(dict.fromkeys(norms))  # in head order
        # Each distinct input normalisation goes through the trunk as its own part of one
        # batch: every trunk module is called once, which quantization (QAT's conv-bn
        # folding) and export need, and the work is one pass per input either way.
        inputs = [self.nets[norms.index(n)].prepare(x) for n in distinct]
        y = inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=0)
        for block in self.nets[0].blocks[: self.shared]:
            y = block(y)
        batch = x.shape[0]
        trunk_out = {n: y if len(distinct) == 1 else y[k * batch: (k + 1) * batch]
                     for k, n in enumerate(distinct)}
        logits = []
        for net, norm in zip(self.nets, norms):
            z = trunk_out[norm]
            for block in net.blocks[self.shared:]:
                z = block(z)
            logits.append(net.classifier(net.pool(z)))
        return torch.cat(logits, dim=1)


def slices_of(arch_config: dict) -> list[tuple[int, int]]:
    """Each head's columns of the output, [start, end)."""
    out, start = [], 0
    for _, n in arch_config["heads"]:
        out.append((start, start + int(n)))
        start += int(n)
    return out


def head_slices(model: nn.Module) -> list[tuple[int, int]] | None:
    """Column ranges of each head; None for a single-head model (also for QAT graphs,
    which carry the float model's arch and arch_config)."""
    if getattr(model, "arch", None) != ARCH:
        return None
    return slices_of(model.arch_config)


def split_config(arch_config: dict) -> tuple[dict, list[int]]:
    """(base_config without widths, widths) of a registry net's arch_config."""
    cfg = dict(arch_config)
    return cfg, [int(c) for c in cfg.pop("channels")]
