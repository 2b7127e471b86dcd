"""MBROLA diphone voices driven by eSpeak NG (Debian `espeak-ng`, `mbrola`, `mbrola-*`).

A diphone voice is cut from one real speaker's recordings, so its sounds are a person's,
not a formant model's or a vocoder's. eSpeak NG turns text into phonemes with durations
and pitch targets (`--pho`); `mbrola` joins that speaker's diphones to them. Besides
the American (us1-us3) and British (en1) voices, eSpeak NG reads English through
German, French, Dutch, Swedish... voices: English with those speakers' accents.

Both programs are deterministic, so an utterance depends only on its settings. The
voices are in Debian's non-free section (`contrib non-free` in the apt sources): each
database may be used with the Mbrola program and copied free of charge, but not sold or
built into a product that is sold (/usr/share/doc/mbrola-*/copyright).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from edgetune.data.synth.process import program_wav

VOICE_DIR = Path("/usr/share/mbrola")
# eSpeak NG voice that reads English for each MBROLA database (espeak-ng --voices=mb).
ESPEAK_VOICE = {
    "us1": "mb-us1", "us2": "mb-us2", "us3": "mb-us3", "en1": "mb-en1",
    "af1": "mb-af1-en", "nl2": "mb-nl2-en", "fr1": "mb-fr1-en", "fr4": "mb-fr4-en",
    "de1": "mb-de1-en", "de2": "mb-de2-en", "de3": "mb-de3-en", "de4": "mb-de4-en",
    "de5": "mb-de5-en", "de6": "mb-de6-en", "gr2": "mb-gr2-en", "hu1": "mb-hu1-en",
    "pl1": "mb-pl1-en", "ro1": "mb-ro1-en", "sw1": "mb-sw1-en", "sw2": "mb-sw2-en",
}
NATIVE = ("us1", "us2", "us3", "en1")


class MbrolaUnavailable(RuntimeError):
    pass


def installed_voices() -> list[str]:
    """The MBROLA databases present, among those eSpeak NG can read English with."""
    return [v for v in ESPEAK_VOICE if (VOICE_DIR / v / v).is_file()]


def synth(text: str, voice: str, speed: int = 150, pitch: int = 50, freq_ratio: float = 1.0,
          time_ratio: float = 1.0) -> tuple[np.ndarray, int]:
    """(float32 mono audio, sample rate) for `text` in MBROLA database `voice`.

    speed (words a minute) and pitch (0-99) are eSpeak's; freq_ratio and time_ratio
    scale MBROLA's pitch points and phone durations."""
    espeak, mbrola = shutil.which("espeak-ng"), shutil.which("mbrola")
    if espeak is None or mbrola is None:
        raise MbrolaUnavailable("espeak-ng and mbrola are not installed (apt-get install espeak-ng mbrola)")
    if voice not in ESPEAK_VOICE:
        raise ValueError(f"unknown MBROLA voice {voice!r}; choose one of {', '.join(ESPEAK_VOICE)}")
    pho = subprocess.run([espeak, "-q", "--pho", "-v", ESPEAK_VOICE[voice], "-s", str(speed), "-p", str(pitch),
                          text], capture_output=True, timeout=60, check=False)
    if pho.returncode != 0 or not pho.stdout.strip():
        raise RuntimeError(f"espeak-ng made no phonemes for {text!r} ({voice}): {pho.stderr.decode(errors='replace')}")
    return program_wav(lambda wav: [mbrola, "-e", "-f", f"{freq_ratio:.4f}", "-t", f"{time_ratio:.4f}",
                                    str(VOICE_DIR / voice / voice), "-", str(wav)],
                       f"mbrola for {text!r} ({voice})", stdin=pho.stdout)
