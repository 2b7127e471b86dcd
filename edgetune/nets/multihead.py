"""Several recognisers on one trunk (`edgetune merge`).

A `MultiHead` holds one net of a registry architecture per head. The first
`shared` blocks are the same module objects in every head, so they run once;
each head then runs its own remaining blocks, pooling and classifier. Its output
is the heads' logits side by side, [batch, sum(n_classes)], so training,
pruning and quantization see one ordinary tensor; `head_slices` says which
columns belong to which head, and the ONNX export names each slice
`logits_<head>`.

`shared` may also give each head its own depth (`[3, 4, 4]`): block j is one
module for every head whose depth is over j, and each other head keeps its own
copy. So heads can branch off the trunk at different blocks, a tree: with
`[3, 4, 4]` the first head owns its last two blocks, and the other two share a
fourth block before each owns the fifth. A head that needs more capacity of its
own gets it without every head paying for it.

Widths follow the registry's convention (one entry per block), flattened: for
each block that some heads share, its width; then each head's own blocks'
widths. So `arch_config["channels"]`, read back from the modules, follows
pruning like any other net's.

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
                 base_config: dict, shared: int | list[int], heads: list, channels: list[int],
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
        depths = head_depths(shared, len(heads), n_blocks)
        if len(channels) != n_widths(depths, n_blocks):
            raise ValueError("channels: one width per shared block, then one per own block of each head")
        if head_cmn is not None and len(head_cmn) != len(heads):
            raise ValueError(f"head_cmn: one entry per head ({len(heads)}), got {len(head_cmn)}")
        shared_widths, own_widths = split_widths(list(channels), depths, n_blocks)
        nets = []
        for i, (_, n) in enumerate(heads):
            widths = shared_widths[: depths[i]] + own_widths[i]
            config = dict(base_config) if head_cmn is None else {**base_config, "cmn": bool(head_cmn[i])}
            nets.append(create_model(base, n, n_frames, n_mels, **config, channels=widths))
        for j in range(n_blocks):  # the trunk: block j is one module in every head deeper than j
            sharing = [i for i in range(len(heads)) if depths[i] > j]
            for i in sharing[1:]:
                nets[i].blocks[j] = nets[sharing[0]].blocks[j]
        self.nets = nn.ModuleList(nets)
        self.names = [name for name, _ in heads]
        self.base, self.base_config = base, dict(base_config)
        self.depths = depths
        self.head_cmn = None if head_cmn is None else [bool(c) for c in head_cmn]
        self.n_frames, self.n_mels = int(n_frames), int(n_mels)

    @property
    def shared(self) -> int | list[int]:
        """Blocks shared: one number when every head shares as many, else one per head."""
        return self.depths[0] if len(set(self.depths)) == 1 else list(self.depths)

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
        trunk = [self.nets[i].width_modules()[j] for j, i in enumerate(self._first_sharing())
                 if i is not None]
        return trunk + [m for net, d in zip(self.nets, self.depths) for m in net.width_modules()[d:]]

    def _first_sharing(self) -> list[int | None]:
        """For each block, the first head that runs the shared copy of it (None: none does)."""
        return [next((i for i, d in enumerate(self.depths) if d > j), None)
                for j in range(len(self.nets[0].blocks))]

    @property
    def blocks(self) -> nn.ModuleList:
        """The blocks every head shares (what `finetune --freeze N` counts)."""
        return nn.ModuleList(list(self.nets[0].blocks[: min(self.depths)]))

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
        batch = x.shape[0]
        # Each distinct input normalisation goes through a shared block as its own part of
        # one batch: every shared module is called once, which quantization (QAT's conv-bn
        # folding) and export need, and the work is one pass per input either way.
        on = list(dict.fromkeys(norms))  # the inputs on the shared path, in head order
        y = torch.cat([self.nets[norms.index(n)].prepare(x) for n in on], dim=0) if len(on) > 1 \
            else self.nets[0].prepare(x)

        def part(n) -> torch.Tensor:
            k = on.index(n)
            return y if len(on) == 1 else y[k * batch: (k + 1) * batch]

        branch = {}
        for j, first in enumerate(self._first_sharing() + [None]):
            for i, d in enumerate(self.depths):
                if d == j:  # head i leaves the shared path here
                    branch[i] = part(norms[i])
            if first is None:
                break
            need = list(dict.fromkeys(norms[i] for i, d in enumerate(self.depths) if d > j))
            if need != on:
                y = torch.cat([part(n) for n in need], dim=0) if len(need) > 1 else part(need[0])
                on = need
            y = self.nets[first].blocks[j](y)
        logits = []
        for i, net in enumerate(self.nets):
            z = branch[i]
            for block in net.blocks[self.depths[i]:]:
                z = block(z)
            logits.append(net.classifier(net.pool(z)))
        return torch.cat(logits, dim=1)


def head_depths(shared: int | list[int], n_heads: int, n_blocks: int) -> list[int]:
    """Blocks each head shares: `shared` as one per head."""
    depths = [int(shared)] * n_heads if isinstance(shared, int) else [int(d) for d in shared]
    if len(depths) != n_heads:
        raise ValueError(f"shared: one depth per head ({n_heads}), got {depths}")
    if not all(1 <= d <= n_blocks for d in depths):
        raise ValueError(f"shared must be 1..{n_blocks} blocks, got {shared}")
    return depths


def n_widths(depths: list[int], n_blocks: int) -> int:
    """Entries of `channels`: one per block some head shares, one per block a head owns."""
    return max(depths) + sum(n_blocks - d for d in depths)


def split_widths(channels: list[int], depths: list[int], n_blocks: int) -> tuple[list[int], list[list[int]]]:
    """(widths of the shared copies of blocks 0..max(depths)-1, each head's own widths)."""
    shared, rest = channels[: max(depths)], channels[max(depths):]
    own = []
    for d in depths:
        own.append(rest[: n_blocks - d])
        rest = rest[n_blocks - d:]
    return shared, own


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
