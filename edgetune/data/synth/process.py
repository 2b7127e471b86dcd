"""One instance per process of a synthesis handle (a library or an onnxruntime session).

Corpus workers are spawned processes: a handle made in the parent must not be reused
in a child, so `get()` makes a fresh one whenever the process id changes."""

from __future__ import annotations

import os
import threading


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
