"""Shared fixtures: tiny, real audio datasets made in code (no downloads, no corpus)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgetune.audio import write_audio
from edgetune.data.dataset import which_split

RATE = 16000
TONE_LABELS = {"low": 300.0, "mid": 900.0, "high": 2500.0}


def speakers_covering_splits(per_split: int = 2, prefix: str = "spk") -> list[str]:
    """Speaker names whose Speech Commands hash puts at least `per_split` in val and test."""
    names, have = [], {"train": 0, "val": 0, "test": 0}
    i = 0
    while min(have["val"], have["test"]) < per_split or have["train"] < 4 * per_split:
        name = f"{prefix}{i}"
        have[which_split(name)] += 1
        names.append(name)
        i += 1
    return names


def tone_clip(freq: float, rng: np.random.Generator, seconds: float = 1.0) -> np.ndarray:
    """A 'word': a short harmonic tone burst at a random onset and level, over faint noise."""
    n = int(RATE * seconds)
    t = np.arange(n) / RATE
    length = rng.uniform(0.3, 0.6)
    onset = rng.uniform(0.05, seconds - length - 0.05)
    f = freq * rng.uniform(0.95, 1.05)
    env = ((t >= onset) & (t < onset + length)) * np.sin(np.pi * np.clip((t - onset) / length, 0, 1))
    tone = sum(np.sin(2 * np.pi * f * k * t) / k for k in (1, 2, 3))
    audio = rng.uniform(0.1, 0.5) * env * tone + 0.003 * rng.standard_normal(n)
    return audio.astype(np.float32)


def make_tone_dataset(root: Path, clips_per_speaker: int = 3, seed: int = 0, noise: bool = True,
                      labels: dict[str, float] | None = None) -> Path:
    rng = np.random.default_rng(seed)
    for speaker in speakers_covering_splits():
        for label, freq in (labels or TONE_LABELS).items():
            for k in range(clips_per_speaker):
                write_audio(root / label / f"{speaker}_nohash_{k}.wav", tone_clip(freq, rng), RATE)
    if noise:
        pink = np.cumsum(rng.standard_normal(RATE * 20)).astype(np.float32)
        pink = (pink - np.convolve(pink, np.ones(400) / 400, mode="same")) * 0.02
        write_audio(root / "_background_noise_" / "pinkish.wav", pink, RATE)
    return root


@pytest.fixture(scope="session")
def tone_dataset(tmp_path_factory) -> Path:
    return make_tone_dataset(tmp_path_factory.mktemp("tones"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny nets run faster on one intra-op thread, and far faster on a busy machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
