"""DS-CNN (Zhang et al. 2017, "Hello Edge: Keyword Spotting on Microcontrollers").

Layout follows ARM's ML-KWS-for-MCU `ds_cnn` (`--model_size_info`):

    S: 5 layers, 64 ch:  conv 10x4 stride (2,2), then 4 x DS 3x3 stride 1
    M: 5 layers, 172 ch: conv 10x4 stride (2,1), DS 3x3 stride (2,2), 3 x DS stride 1
    L: 6 layers, 276 ch: conv 10x4 stride (2,1), DS 3x3 stride (2,2), 4 x DS stride 1

A DS block is depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU. The
net ends in global average pooling and a linear classifier. Kernels are
(time, frequency), which is the [frames, mels] layout of edgetune features, so
the input needs no transpose. Convs carry no bias (BN follows each one).
"""

from __future__ import annotations

import torch
from torch import nn

from edgetune.nets.inputs import subtract_band_means


def _pair(v) -> list[int]:
    if isinstance(v, int):
        return [v, v]
    v = [int(x) for x in v]
    if len(v) != 2:
        raise ValueError(f"expected an int or a pair, got {v!r}")
    return v


class ConvBNReLU(nn.Sequential):
    """The stem: a full conv, BN, ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel, stride):
        kernel, stride = _pair(kernel), _pair(stride)
        # TF 'SAME' output size for the ARM strides: pad (k-1)//2 each side
        pad = [(k - 1) // 2 for k in kernel]
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride, pad, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        )


class DSBlock(nn.Module):
    """Depthwise-separable block: dw 3x3 -> BN -> ReLU -> pw 1x1 -> BN -> ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel=3, stride=1):
        super().__init__()
        kernel, stride = _pair(kernel), _pair(stride)
        pad = [(k - 1) // 2 for k in kernel]
        self.dw = nn.Conv2d(c_in, c_in, kernel, stride, pad, groups=c_in, bias=False)
        self.dw_bn = nn.BatchNorm2d(c_in)
        self.pw = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.pw_bn = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.dw_bn(self.dw(x)))
        return self.act(self.pw_bn(self.pw(x)))


class DSCNN(nn.Module):
    """DS-CNN on [batch, 1, n_frames, n_mels] log-mel features.

    `channels` lists the output width of the stem and of each DS block (pruned
    widths included); `strides` the stride of the stem then of each block.
    """

    def __init__(
        self,
        n_classes: int,
        n_frames: int = 98,
        n_mels: int = 40,
        *,
        channels: list[int],
        strides: list,
        stem_kernel=(10, 4),
        kernel=(3, 3),
        dropout: float = 0.2,
        cmn: bool = False,
    ):
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) < 2 or len(strides) != len(channels):
            raise ValueError("channels and strides need one entry for the stem and one per block")
        if min(channels) < 1:
            raise ValueError(f"channel widths must be >= 1, got {channels}")
        self.n_frames, self.n_mels = int(n_frames), int(n_mels)
        self._strides = [_pair(s) for s in strides]
        self._stem_kernel = _pair(stem_kernel)
        self._kernel = _pair(kernel)
        self._dropout = float(dropout)
        self._cmn = bool(cmn)
        blocks = [ConvBNReLU(1, channels[0], self._stem_kernel, self._strides[0])]
        for i in range(1, len(channels)):
            blocks.append(DSBlock(channels[i - 1], channels[i], self._kernel, self._strides[i]))
        self.blocks = nn.ModuleList(blocks)
        self.dropout = nn.Dropout(self._dropout)
        self.classifier = nn.Linear(channels[-1], n_classes)

    @property
    def channels(self) -> list[int]:
        """Widths read back from the modules (so they follow pruning)."""
        return [m.out_channels for m in self.width_modules()]

    def width_modules(self) -> list[nn.Module]:
        """The conv whose output width is each entry of `channels` (one coupled group each)."""
        return [self.blocks[0][0]] + [b.pw for b in self.blocks[1:]]

    @property
    def arch_config(self) -> dict:
        return {
            "channels": self.channels,
            "strides": [list(s) for s in self._strides],
            "stem_kernel": list(self._stem_kernel),
            "kernel": list(self._kernel),
            "dropout": self._dropout,
            "cmn": self._cmn,
        }

    @property
    def embedding_dim(self) -> int:
        return self.classifier.in_features

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the first block takes it: [batch, 1, frames, mels], each band's
        mean over the frames removed when `cmn`."""
        return subtract_band_means(x, time_dim=2) if self._cmn else x

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's output -> embedding [batch, channels[-1]]."""
        return self.dropout(x.mean(dim=(2, 3)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, 1, frames, mels] -> pooled embedding [batch, channels[-1]]."""
        x = self.prepare(x)
        for block in self.blocks:
            x = block(x)
        return self.pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _cfg(width: int, n_ds: int, stem_stride, first_ds_stride) -> dict:
    strides = [list(stem_stride), list(first_ds_stride)] + [[1, 1]] * (n_ds - 1)
    return {"channels": [width] * (n_ds + 1), "strides": strides,
            "stem_kernel": [10, 4], "kernel": [3, 3], "dropout": 0.2, "cmn": False}


CONFIGS = {
    "dscnn-s": _cfg(64, 4, (2, 2), (1, 1)),
    "dscnn-m": _cfg(172, 4, (2, 1), (2, 2)),
    "dscnn-l": _cfg(276, 5, (2, 1), (2, 2)),
}
