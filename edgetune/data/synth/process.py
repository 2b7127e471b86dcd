"""One instance per process of a synthesis handle (a library or an onnxruntime session),
and running a speech program that writes a WAV file.

Corpus workers are spawned processes: a handle made in the parent must not be reused
in a child, so `get()` makes a fresh one whenever the process id changes."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np
import soundfile as sf


class PerProcess:
    _instance = None
    _pid: int | None = None

    def __init_subclass__(cls, **kwargs):
        # A lock per class: one handle's constructor may fetch another's (Piper and Kokoro
        # phonemise with eSpeak), which would deadlock on a lock shared by all of them.
        super().__init_subclass__(**kwargs)
        cls._lock = threading.Lock()

    @classmethod
    def get(cls):
        with cls._lock:
            if cls._instance is None or cls._pid != os.getpid():
                cls._instance = cls()
                cls._pid = os.getpid()
            return cls._instance


def program_wav(make_cmd, what: str, stdin: bytes | None = None) -> tuple[np.ndarray, int]:
    """Run a speech program that writes a WAV file; (float32 mono audio, sample rate).

    `make_cmd(path)` gives the command line that writes `path` (a file, not a pipe: a
    piped WAV header has no length); `what` names the program and utterance in errors."""
    with tempfile.TemporaryDirectory(prefix="edgetune-say-") as tmp:
        wav = Path(tmp) / "say.wav"  # some programs (pico2wave) want a name ending in .wav
        res = subprocess.run(make_cmd(wav), input=stdin, capture_output=True, timeout=60, check=False)
        if res.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"{what} failed: {res.stderr.decode(errors='replace').strip()}")
        audio, rate = sf.read(wav, dtype="float32")
    return audio.reshape(-1), int(rate)
