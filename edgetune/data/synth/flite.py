"""CMU Flite (Debian package `flite`), run as a subprocess.

One `flite` process per utterance, WAV on stdout: Flite starts in a few ms and
renders a word in ~20 ms, so a library binding would gain little. Flite has no
randomness, so an utterance depends only on its settings (bit-reproducible).

Settings, measured on Flite 2.2 (Debian bookworm):
- `duration_stretch` (all voices): >1 is slower.
- `f0_shift` (a pitch multiplier): works for kal, kal16, awb and slt; rms ignores
  it (and `int_f0_target_mean`), so rms pitch changes only by the engine's warp.
- kal is 8 kHz (telephone-band speech for part of the corpus), the others 16 kHz.
"""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import soundfile as sf

VOICES = ("kal", "kal16", "awb", "rms", "slt")


class FliteUnavailable(RuntimeError):
    pass


def binary() -> str | None:
    return shutil.which("flite")


def synth(text: str, voice: str, duration_stretch: float = 1.0, f0_shift: float = 1.0) -> tuple[np.ndarray, int]:
    """(float32 mono audio, sample rate) for `text` spoken by a Flite voice."""
    exe = binary()
    if exe is None:
        raise FliteUnavailable("flite is not installed (apt-get install flite)")
    if voice not in VOICES:
        raise ValueError(f"unknown Flite voice {voice!r}; choose one of {', '.join(VOICES)}")
    cmd = [exe, "-voice", voice, "-t", text, "-o", "/dev/stdout",
           "--setf", f"duration_stretch={duration_stretch:.4f}", "--setf", f"f0_shift={f0_shift:.4f}"]
    res = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    if res.returncode != 0 or len(res.stdout) <= 44:
        raise RuntimeError(f"flite failed for {text!r} ({voice}): {res.stderr.decode(errors='replace').strip()}")
    audio, rate = sf.read(io.BytesIO(res.stdout), dtype="float32")
    return audio.reshape(-1), int(rate)
