"""RHVoice's English voices (Debian non-free `rhvoice rhvoice-english`), run as a subprocess.

RHVoice voices are statistical parametric (HTS) models, each trained on one real
speaker's recordings: American bdl, clb and slt (CMU Arctic), Scottish alan, and
evgeniy-eng and lyubov, English read by Russian speakers (an accent no other engine
here has). `RHVoice-test` reads text on stdin and writes a 24 kHz WAV; ~0.1 s a
word. It has no randomness, so an utterance depends only on its settings.

Settings, measured on RHVoice 1.8 (Debian bookworm): `-r` (rate, percent; 100 is the
voice's own pace, 50 twice as long) and `-t` (pitch, percent; 100 is the voice's own).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from edgetune.data.synth.process import program_wav

VOICE_DIR = Path("/usr/share/RHVoice/voices")
VOICES = ("alan", "bdl", "clb", "evgeniy-eng", "lyubov", "slt")


class RHVoiceUnavailable(RuntimeError):
    pass


def installed_voices() -> list[str]:
    return [v for v in VOICES if (VOICE_DIR / v).is_dir()]


def synth(text: str, voice: str, rate: int = 100, pitch: int = 100) -> tuple[np.ndarray, int]:
    """(float32 mono audio, sample rate) for `text` spoken by an RHVoice voice."""
    exe = shutil.which("RHVoice-test")
    if exe is None:
        raise RHVoiceUnavailable("RHVoice is not installed (apt-get install rhvoice rhvoice-english)")
    if voice not in VOICES:
        raise ValueError(f"unknown RHVoice voice {voice!r}; choose one of {', '.join(VOICES)}")
    return program_wav(lambda wav: [exe, "-p", voice, "-r", str(rate), "-t", str(pitch), "-o", str(wav)],
                       f"RHVoice for {text!r} ({voice})", stdin=text.encode())
