"""BC-ResNet (Kim et al. 2021, "Broadcasted Residual Learning for Efficient
Keyword Spotting", Qualcomm AI Research), with SubSpectralNorm.

Widths for BC-ResNet-tau (tau = 1, 1.5, 2, 3, 6, 8), as in the paper's table
and the reference code (base = 8 * tau):

    head   conv 5x5 stride (2,1)                   16 tau
    stage1 2 x BC-ResBlock                          8 tau
    stage2 2 x BC-ResBlock, stride (2,1), dil 2    12 tau
    stage3 4 x BC-ResBlock, stride (2,1), dil 4    16 tau
    stage4 4 x BC-ResBlock,               dil 8    20 tau
    tail   dw 5x5 (no frequency padding), pw 1x1   32 tau
    pool, linear classifier

A BC-ResBlock: f2 = frequency-wise depthwise (3x1) conv + SubSpectralNorm;
its output is averaged over frequency, f1 = temporal depthwise (1x3, dilated)
conv + BN + SiLU + pointwise conv + dropout, and the 1-D result is broadcast
back over frequency: y = relu(x + f2(x) + f1(avg_f(f2(x)))). The first block
of each stage is a transition block (a 1x1 conv + BN + ReLU first, no
identity shortcut).

The network works on [freq, time] internally: edgetune features are
[batch, 1, frames, mels], so `features` transposes first. Everything is
static-shape Python (no data-dependent control flow), no in-place ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgetune.nets.inputs import subtract_band_means

DEPTHS = (2, 2, 4, 4)
STRIDED_STAGES = (1, 2)  # stages whose first block halves the frequency axis


def default_channels(tau: float) -> list[int]:
    base = int(8 * tau)
    return [base * 2, base, int(base * 1.5), base * 2, int(base * 2.5), base * 4]


def _subbands_for(height: int, subbands: int) -> int:
    """Largest number of sub-bands <= `subbands` that divides `height`."""
    for g in range(max(1, min(subbands, height)), 0, -1):
        if height % g == 0:
            return g
    return 1


class SubSpectralNorm(nn.Module):
    """Sub-spectral normalisation (Chang et al. 2021): the frequency axis is cut
    into `subbands` bands and each (channel, band) pair has its own batch-norm
    statistics and affine parameters.

    Implemented as the reference does: reshape [B, C, F, T] -> [B, C*S, F/S, T],
    BatchNorm2d(C*S), reshape back. Channel c owns BN entries c*S .. c*S+S-1, so
    pruning channel c removes those S entries (see edgetune.compress.prune).
    Input layout: frequency on dim 2.
    """

    def __init__(self, channels: int, subbands: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.subbands = int(subbands)
        self.bn = nn.BatchNorm2d(channels * self.subbands, eps=eps, momentum=momentum)

    @property
    def channels(self) -> int:
        return self.bn.num_features // self.subbands

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, t = x.shape
        y = x.reshape(b, c * self.subbands, f // self.subbands, t)
        return self.bn(y).reshape(b, c, f, t)

    @torch.no_grad()
    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode form y = x * scale + shift; both [C, S] (per channel, per band).

        Use it to fold SSN for deployment: expand each band over its F/S bins to
        get a [1, C, F, 1] multiplier and offset.
        """
        bn = self.bn
        w = bn.weight if bn.affine else torch.ones_like(bn.running_var)
        b = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        scale = w / torch.sqrt(bn.running_var + bn.eps)
        shift = b - bn.running_mean * scale
        return scale.view(-1, self.subbands), shift.view(-1, self.subbands)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, subbands={self.subbands}"


class BCResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, *, transition: bool, freq_stride: int,
                 dilation: int, height: int, subbands: int, dropout: float):
        super().__init__()
        self.transition = bool(transition)
        if not self.transition and (c_in != c_out or freq_stride != 1):
            raise ValueError("a non-transition BC-ResBlock keeps width and resolution")
        if self.transition:
            self.expand = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())
        else:
            self.expand = nn.Identity()
        # f2: frequency-wise depthwise conv + SSN
        self.f2_conv = nn.Conv2d(c_out, c_out, (3, 1), (freq_stride, 1), (1, 0),
                                 groups=c_out, bias=False)
        out_height = (height + 2 - 3) // freq_stride + 1
        self.out_height = out_height
        self.f2_norm = SubSpectralNorm(c_out, _subbands_for(out_height, subbands))
        # f1: temporal depthwise (dilated) conv + BN + SiLU + pointwise conv + dropout
        self.f1 = nn.Sequential(
            nn.Conv2d(c_out, c_out, (1, 3), 1, (0, dilation), dilation=(1, dilation),
                      groups=c_out, bias=False),
            nn.BatchNorm2d(c_out),
            nn.SiLU(),
            nn.Conv2d(c_out, c_out, 1, bias=False),
            nn.Dropout2d(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.f2_norm(self.f2_conv(self.expand(x)))
        aux = x
        x = self.f1(x.mean(dim=2, keepdim=True))  # [B, C, 1, T], broadcast over frequency
        x = x + aux
        if not self.transition:
            x = x + shortcut
        return F.relu(x)


class BCResNet(nn.Module):
    """BC-ResNet on [batch, 1, n_frames, n_mels] log-mel features.

    `channels` = [head, stage1, stage2, stage3, stage4, tail] widths (pruned
    widths included); every block of a stage shares its stage's width, as the
    residual and broadcast additions tie them together.
    """

    def __init__(
        self,
        n_classes: int,
        n_frames: int = 98,
        n_mels: int = 40,
        *,
        channels: list[int],
        depths: list[int] = DEPTHS,
        subbands: int = 5,
        dropout: float = 0.1,
        cmn: bool = False,
    ):
        super().__init__()
        channels = [int(c) for c in channels]
        depths = [int(d) for d in depths]
        if len(channels) != 6 or len(depths) != 4:
            raise ValueError("BC-ResNet needs 6 channel widths (head, 4 stages, tail) and 4 depths")
        if min(channels) < 1 or min(depths) < 1:
            raise ValueError(f"widths and depths must be >= 1, got {channels}, {depths}")
        self.n_frames, self.n_mels = int(n_frames), int(n_mels)
        self._depths = depths
        self._subbands = int(subbands)
        self._dropout = float(dropout)
        self._cmn = bool(cmn)

        height = (n_mels + 2 * 2 - 5) // 2 + 1
        blocks: list[nn.Module] = [nn.Sequential(
            nn.Conv2d(1, channels[0], 5, (2, 1), 2, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(),
        )]
        c_prev = channels[0]
        for s, depth in enumerate(depths):
            c = channels[s + 1]
            stage = []
            for j in range(depth):
                stride = 2 if (s in STRIDED_STAGES and j == 0) else 1
                blk = BCResBlock(c_prev, c, transition=(j == 0), freq_stride=stride,
                                 dilation=2 ** s, height=height, subbands=self._subbands,
                                 dropout=self._dropout)
                height = blk.out_height
                stage.append(blk)
                c_prev = c
            blocks.append(nn.Sequential(*stage))
        kf = min(5, height)  # 5 for 40 mels (the frequency axis is 5 here)
        blocks.append(nn.Sequential(
            nn.Conv2d(c_prev, c_prev, (kf, 5), 1, (0, 2), groups=c_prev, bias=False),
            nn.Conv2d(c_prev, channels[5], 1, bias=False),
            nn.BatchNorm2d(channels[5]),
            nn.ReLU(),
        ))
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Linear(channels[5], n_classes)

    @property
    def channels(self) -> list[int]:
        """Widths read back from the modules (so they follow pruning)."""
        return [m.out_channels for m in self.width_modules()]

    def width_modules(self) -> list[nn.Module]:
        """The conv whose output width is each entry of `channels` (one coupled
        group each: the residual and broadcast sums tie a whole stage together)."""
        return [self.blocks[0][0], *(stage[0].expand[0] for stage in self.blocks[1:5]),
                self.blocks[5][1]]

    @property
    def arch_config(self) -> dict:
        return {"channels": self.channels, "depths": list(self._depths),
                "subbands": self._subbands, "dropout": self._dropout, "cmn": self._cmn}

    @property
    def embedding_dim(self) -> int:
        return self.classifier.in_features

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, 1, frames, mels] -> [batch, 1, mels, frames]: frequency first; each band's
        mean over the frames removed when `cmn`."""
        if self._cmn:
            x = subtract_band_means(x, time_dim=2)
        return x.transpose(2, 3)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's output -> embedding [batch, channels[-1]]."""
        return x.mean(dim=(2, 3))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, 1, frames, mels] -> pooled embedding [batch, channels[-1]]."""
        x = self.prepare(x)
        for block in self.blocks:
            x = block(x)
        return self.pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _cfg(tau: float) -> dict:
    return {"channels": default_channels(tau), "depths": list(DEPTHS), "subbands": 5,
            "dropout": 0.1, "cmn": False}


CONFIGS = {
    "bcresnet-1": _cfg(1),
    "bcresnet-2": _cfg(2),
    "bcresnet-3": _cfg(3),
    "bcresnet-8": _cfg(8),
}
