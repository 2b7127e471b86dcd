"""SVOX Pico's English voices (Debian non-free `libttspico-utils`), run as a subprocess.

Two voices, American and British English, both women's (HMM synthesis trained on
recorded speakers). `pico2wave` writes a 16 kHz WAV to a file; its markup sets pitch
and speed (rate) in percent (100 is the voice's own). Deterministic.
"""

from __future__ import annotations

import shutil

import numpy as np

from edgetune.data.synth.process import program_wav

VOICES = ("en-US", "en-GB")


class PicoUnavailable(RuntimeError):
    pass


def synth(text: str, voice: str, rate: int = 100, pitch: int = 100) -> tuple[np.ndarray, int]:
    """(float32 mono audio, sample rate) for `text` spoken by a Pico voice."""
    exe = shutil.which("pico2wave")
    if exe is None:
        raise PicoUnavailable("pico2wave is not installed (apt-get install libttspico-utils)")
    if voice not in VOICES:
        raise ValueError(f"unknown Pico voice {voice!r}; choose one of {', '.join(VOICES)}")
    marked = f"<speed level='{rate}'><pitch level='{pitch}'>{text}</pitch></speed>"
    return program_wav(lambda wav: [exe, "-l", voice, "-w", str(wav), marked], f"pico2wave for {text!r} ({voice})")
