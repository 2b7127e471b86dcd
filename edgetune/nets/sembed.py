"""Google's speech_embedding (Lin et al. 2020, "Training keyword spotters with limited and
synthesized speech data") as a frozen trunk, with a small classifier head on top.

The trunk was trained by Google on a large corpus of real speech (it is the backbone
openWakeWord trains its synthetic-only wake words on); a head trained on edgetune's
synthetic corpus inherits its robustness to real voices. Its weights come from the
ONNX file openWakeWord 0.4.0 ships (Apache-2.0), imported once by
`tools/import_speech_embedding.py` into `models/sembed.pt`; this module only rebuilds
the network, so nothing is pickled.

The trunk takes 76 frames x 32 Slaney mel bands (`FrontEnd.preset("sembed")`) and
returns one 96-d embedding per window; it is convolutional in time with a stride of 8
frames, so a clip of n frames gives (n - 76) // 8 + 1 embeddings in one pass.

A word can sit anywhere in a clip, so the head is the same at every position: the clip is
extended by `pad_frames` at each end (its edge frames repeated, as the room sound goes on),
every run of `context_windows` neighbouring embeddings is classified by one small network
(a convolution over windows), and the strongest evidence over positions wins (max-pool).
Without the padding a 1 s clip gives three windows and a word in its first 0.2 s is seen
whole by the first alone: a head that flattened the three in order scored 56-74% on
synthetic commands that start there against 87% on later ones (edgetune's README).
"""

from __future__ import annotations

import math

import torch
from torch import nn

WINDOW_FRAMES = 76  # the trunk's receptive field in frames (one embedding)
FRAME_STRIDE = 8  # frames between successive embeddings
EMBED_DIM = 96
# The trunk's input scale: log10 of mel power of int16-scale audio, then openWakeWord's
# x/10 + 2 on the decibels. edgetune's features are ln(mel power) of [-1, 1] audio, so the
# trunk's value is x / ln(10) + 2 + log10(32767**2).
INPUT_OFFSET = 2.0 + 2.0 * math.log10(32767.0)
# (out channels, pool after this pair or quad of convs) per stage; every conv pair is a
# 1x3 conv across bands (padded) then a 3x1 conv across frames (not padded).
STAGES = [(24, (2, 2)), (48, (1, 2)), (72, (2, 2)), (96, (1, 2)), (96, (2, 2))]
PAIRS_PER_STAGE = [1, 2, 2, 2, 2]
LEAK, FLOOR = 0.2, -0.4  # each conv: LeakyReLU(0.2), then max(x, -0.4)


class LeakyFloor(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp_min(nn.functional.leaky_relu(x, LEAK), FLOOR)


class ChannelAffine(nn.Module):
    """x * scale + shift per channel: the trunk's one batch norm with its statistics folded in.
    Fixed buffers, not a BatchNorm2d: quantization-aware training switches batch norms to
    batch statistics, and the trunk must stay as Google trained it."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("scale", torch.ones(channels))
        self.register_buffer("shift", torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale[:, None, None] + self.shift[:, None, None]


def _conv(c_in: int, c_out: int, across_bands: bool) -> nn.Sequential:
    if across_bands:
        return nn.Sequential(nn.Conv2d(c_in, c_out, (1, 3), padding=(0, 1)), LeakyFloor())
    return nn.Sequential(nn.Conv2d(c_in, c_out, (3, 1)), LeakyFloor())


def speech_embedding_trunk() -> nn.ModuleList:
    """The stages of the trunk: [batch, 1, frames, 34 (32 bands padded)] -> [batch, 96, windows, 1]."""
    stem = nn.Sequential(nn.Conv2d(1, 24, 3, bias=False), nn.ReLU(), ChannelAffine(24), LeakyFloor())
    stages, c_in = [stem], 24
    for (c_out, pool), pairs in zip(STAGES, PAIRS_PER_STAGE):
        layers = []
        for _ in range(pairs):
            layers += [_conv(c_in, c_out, True), _conv(c_out, c_out, False)]
            c_in = c_out
        layers.append(nn.MaxPool2d(pool))
        stages.append(nn.Sequential(*layers))
    stages[-1].append(nn.Conv2d(96, EMBED_DIM, (3, 1), bias=False))
    return nn.ModuleList(stages)


def n_windows(n_frames: int) -> int:
    return max(0, (n_frames - WINDOW_FRAMES) // FRAME_STRIDE + 1)


class WindowNorm(nn.Module):
    """LayerNorm of each window's embedding: [batch, 96, windows, 1] in and out."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class MaxOverWindows(nn.Module):
    """[batch, channels, positions, 1] -> [batch, channels]: the strongest evidence anywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(x, dim=(2, 3))


def window_head(context: int, hidden: int, dropout: float) -> nn.Sequential:
    """The same classifier at every position: `context` neighbouring embeddings -> hidden,
    then the max over positions."""
    return nn.Sequential(WindowNorm(EMBED_DIM), nn.Conv2d(EMBED_DIM, hidden, (context, 1)), nn.ReLU(),
                         nn.Dropout(dropout), nn.Conv2d(hidden, hidden, 1), nn.ReLU(), nn.Dropout(dropout),
                         MaxOverWindows())


class SpeechEmbeddingNet(nn.Module):
    """[batch, 1, n_frames, 32] log-mel -> logits. `blocks`: the trunk's stages, then the head.

    `freeze_trunk` keeps the trunk as imported: no gradient (training on synthetic voices
    would wear away what real speech taught it)."""

    def __init__(self, n_classes: int, n_frames: int = 98, n_mels: int = 32, *, hidden: int = 128,
                 dropout: float = 0.3, freeze_trunk: bool = True, cmn: bool = False,
                 pad_frames: int = 24, context_windows: int = 3):
        super().__init__()
        if cmn:
            raise ValueError("the speech embedding's trunk was trained on absolute log-mel levels; "
                             "band-mean removal (cmn) does not apply to it")
        if n_mels != 32:
            raise ValueError(f"the speech embedding takes 32 mel bands (FrontEnd.preset('sembed')), not {n_mels}")
        windows = n_windows(n_frames + 2 * pad_frames)
        if pad_frames < 0 or context_windows < 1 or windows < context_windows:
            raise ValueError(f"{n_frames} frames padded by {pad_frames} give {windows} embeddings; the "
                             f"head needs {context_windows} (each takes {WINDOW_FRAMES} frames)")
        self.n_frames, self.n_mels = int(n_frames), int(n_mels)
        self._hidden, self._dropout, self._freeze = int(hidden), float(dropout), bool(freeze_trunk)
        self._pad, self._context = int(pad_frames), int(context_windows)
        head = window_head(self._context, self._hidden, self._dropout)
        self.blocks = nn.ModuleList([*speech_embedding_trunk(), head])
        self.classifier = nn.Linear(hidden, n_classes)
        self.freeze_trunk(self._freeze)

    @property
    def trunk(self) -> list[nn.Module]:
        return list(self.blocks[:-1])

    def freeze_trunk(self, frozen: bool) -> None:
        for stage in self.trunk:
            stage.requires_grad_(not frozen)
        self._freeze = frozen

    @property
    def learns_through_masks(self) -> bool:
        """Whether SpecAugment's masks suit training (edgetune.train.finetune): not with a frozen trunk."""
        return not self._freeze

    @property
    def arch_config(self) -> dict:
        return {"hidden": self._hidden, "dropout": self._dropout, "freeze_trunk": self._freeze, "cmn": False,
                "pad_frames": self._pad, "context_windows": self._context}

    @property
    def embedding_dim(self) -> int:
        return self.classifier.in_features

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """edgetune's log-mel -> the trunk's input scale, bands zero-padded by one each side."""
        return nn.functional.pad(x / math.log(10.0) + INPUT_OFFSET, (1, 1))

    def trunk_output(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, 1, frames, 32] -> [batch, 96, windows, 1], for the frames as given."""
        x = self.prepare(x)
        for stage in self.trunk:
            x = stage(x)
        return x

    def embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, 1, frames, 32] -> [batch, windows, 96]: the trunk's output, as Google's."""
        return self.trunk_output(x).squeeze(3).transpose(1, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The clip extended by `pad_frames` at each end with copies of its edge frames (the
        room sound goes on), through the trunk and the head."""
        if self._pad:
            x = nn.functional.pad(x, (0, 0, self._pad, self._pad), mode="replicate")
        return self.blocks[-1](self.trunk_output(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


CONFIGS = {"sembed": {"hidden": 128, "dropout": 0.3, "freeze_trunk": True, "cmn": False,
                      "pad_frames": 24, "context_windows": 3}}
