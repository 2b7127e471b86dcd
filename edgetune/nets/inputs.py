"""What a net does to its log-mel input before the first conv."""

from __future__ import annotations

import torch


def subtract_band_means(x: torch.Tensor, time_dim: int) -> torch.Tensor:
    """Cepstral mean normalisation on log-mel: each band minus its mean over the window.

    A microphone's or a room's colouring multiplies the spectrum, so it adds a constant
    to each log-mel band; removing each band's mean over the window removes it, and the
    same for a speaker's overall level and tilt. It runs inside the model (so in the
    ONNX graph), on the window the model sees: a stream needs no utterance boundaries.
    Measured on real spoken digits after training on synthetic voices only (README,
    "Microphones colour, the model should not care")."""
    return x - x.mean(dim=time_dim, keepdim=True)
