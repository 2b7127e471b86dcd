"""`edgetune record`: a prompted session of the user's own voice, as a Speech Commands folder.

Each take: a prompt ("say: a") after a countdown, a capture window, energy VAD
to find the utterance, then exactly one clip (1 s at 16 kHz, like the built-in
corpus) centred on it with the real room sound around it, written atomically
as OUT/<label>/<speaker>_nohash_<n>.wav. A few seconds of the quiet room go to
OUT/_background_noise_/ so `_silence_` is the user's room too. The user is one
speaker, so the hash rule keeps all of their clips in one split, as Speech
Commands does. Re-running tops each label up to `count`; numbering continues.

Audio comes from a `Capture`: the microphone, a file or raw PCM on stdin (the
last two make a session reproducible and testable without a human). Nothing
here prints: a `SessionUI` (the CLI's) shows prompts, the level meter and asks
keep/retake/quit.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soxr

from edgetune.audio import MAX_LONG_SECONDS, load_audio, write_audio
from edgetune.errors import DataError, DeviceError
from edgetune.runtime.level import Utterance, clip_around, find_utterance, peak_level_db

SAMPLE_RATE = 16000
CLIP_SECONDS = 1.0  # the built-in corpus's and Speech Commands' clip length
NOISE_DIR = "_background_noise_"
# Quieter than this is not a voice, whatever the room (dBFS of the loudest 100 ms).
VOICE_MIN_DB = -55.0
_SPEAKER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


class EndOfInput(Exception):
    """A file or stdin source ran out: the session ends early, cleanly."""


# ---------------------------------------------------------------- sources


class Capture:
    """Audio at SAMPLE_RATE, read window by window. `live` sources run in real time
    (countdowns wait; what came in during a prompt is flushed)."""

    live = False
    source = ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def flush(self) -> None:
        """Drop audio captured but not read yet."""

    def read(self, seconds: float, on_level=None) -> np.ndarray:
        raise NotImplementedError


class FileCapture(Capture):
    """A recording of a whole session: each window takes the next `seconds` of the file."""

    def __init__(self, path: str | os.PathLike, sample_rate: int = SAMPLE_RATE):
        self.audio = load_audio(path, sample_rate, max_seconds=MAX_LONG_SECONDS)
        self.sample_rate = sample_rate
        self.pos = 0
        self.source = f"file {path}"

    def read(self, seconds: float, on_level=None) -> np.ndarray:
        n = round(seconds * self.sample_rate)
        if self.pos + n > len(self.audio):
            raise EndOfInput
        out = self.audio[self.pos : self.pos + n]
        self.pos += n
        return out


class PcmCapture(Capture):
    """Raw s16le mono PCM at `rate` from a binary stream (e.g. `arecord -t raw | ...`)."""

    def __init__(self, stream: BinaryIO, rate: int = SAMPLE_RATE, sample_rate: int = SAMPLE_RATE):
        self.stream, self.rate, self.sample_rate = stream, rate, sample_rate
        self.source = f"stdin at {rate} Hz"

    def read(self, seconds: float, on_level=None) -> np.ndarray:
        want = 2 * round(seconds * self.rate)
        data = b""
        while len(data) < want:
            more = self.stream.read(want - len(data))
            if not more:
                raise EndOfInput
            data += more
        x = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
        if self.rate != self.sample_rate:
            x = soxr.resample(x, self.rate, self.sample_rate).astype(np.float32)
        return x


class MicCapture(Capture):
    """The microphone (sounddevice, imported only here); the stream stays open all session."""

    live = True

    def __init__(self, device=None, sample_rate: int = SAMPLE_RATE, first_block_s: float = 10.0):
        from edgetune.runtime.listen import Microphone

        self.mic = Microphone(sample_rate, device)
        self.sample_rate = sample_rate
        self.source = self.mic.source
        self.first_block_s = first_block_s

    def __enter__(self):
        self.mic.__enter__()
        # the first stream after a sound server starts can take a second or two to deliver
        deadline = time.monotonic() + self.first_block_s
        while self.mic.read(timeout=0.2) is None:
            if time.monotonic() > deadline:
                self.mic.__exit__(None, None, None)
                raise DeviceError(
                    f"{self.source} delivered no audio in {self.first_block_s:g} s; "
                    "check the input with `edgetune listen --list-devices`"
                )
        return self

    def __exit__(self, *exc):
        return self.mic.__exit__(*exc)

    def flush(self) -> None:
        self.mic.flush()

    def read(self, seconds: float, on_level=None) -> np.ndarray:
        n = round(seconds * self.sample_rate)
        got, have = [], 0
        while have < n:
            block = self.mic.read()
            if block is None or not len(block):
                continue
            got.append(block)
            have += len(block)
            if on_level is not None:
                on_level(peak_level_db(block, self.sample_rate))
        return np.concatenate(got)[:n]


def open_capture(
    file: str | os.PathLike | None = None,
    stdin: BinaryIO | None = None,
    rate: int = SAMPLE_RATE,
    device=None,
    sample_rate: int = SAMPLE_RATE,
) -> Capture:
    if file is not None:
        return FileCapture(file, sample_rate)
    if stdin is not None:
        return PcmCapture(stdin, rate, sample_rate)
    return MicCapture(device, sample_rate)


# ---------------------------------------------------------------- the folder


class ClipFolder:
    """OUT/<label>/<speaker>_nohash_<n>.wav and OUT/_background_noise_/<speaker>_room_<n>.wav."""

    def __init__(self, root: str | os.PathLike, speaker: str):
        if not _SPEAKER.match(speaker) or "nohash" in speaker:
            raise DataError(
                f"speaker name {speaker!r} is not usable in file names; use letters, digits and '-'"
            )
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise DataError(f"{self.root}: exists and is not a folder; pick another --out")
        self.speaker = speaker
        self._clip = re.compile(rf"^{re.escape(speaker)}_nohash_(\d+)\.wav$")
        self._room = re.compile(rf"^{re.escape(speaker)}_room_(\d+)\.wav$")

    def _numbers(self, folder: Path, pattern: re.Pattern) -> list[int]:
        if not folder.is_dir():
            return []
        return [int(m.group(1)) for f in folder.iterdir() if (m := pattern.match(f.name))]

    def count(self, label: str) -> int:
        return len(self._numbers(self.root / label, self._clip))

    def write(self, label: str, clip: np.ndarray, sample_rate: int) -> Path:
        n = max(self._numbers(self.root / label, self._clip), default=-1) + 1
        path = self.root / label / f"{self.speaker}_nohash_{n}.wav"
        write_audio(path, clip, sample_rate)
        return path

    def has_background(self) -> bool:
        return bool(self._numbers(self.root / NOISE_DIR, self._room))

    def write_background(self, audio: np.ndarray, sample_rate: int) -> Path:
        n = max(self._numbers(self.root / NOISE_DIR, self._room), default=-1) + 1
        path = self.root / NOISE_DIR / f"{self.speaker}_room_{n}.wav"
        write_audio(path, audio, sample_rate)
        return path


# ---------------------------------------------------------------- a take


@dataclass
class Take:
    label: str
    clip: np.ndarray  # exactly one clip
    utterance: Utterance
    sample_rate: int

    @property
    def seconds(self) -> float:
        return (self.utterance.end - self.utterance.start) / self.sample_rate

    def warnings(self) -> list[str]:
        out = []
        if self.utterance.clipped:
            out.append("too loud (clipped): move back or lower the input gain")
        if self.seconds > len(self.clip) / self.sample_rate:
            out.append(f"{self.seconds:.1f} s long, cut to {len(self.clip) / self.sample_rate:g} s")
        return out


def take_from(
    label: str,
    audio: np.ndarray,
    sample_rate: int,
    min_level_db: float,
    clip_seconds: float = CLIP_SECONDS,
) -> Take | None:
    """The utterance in a capture window as one clip; None when nothing was said."""
    utt = find_utterance(audio, sample_rate, min_level_db=min_level_db)
    if utt is None:
        return None
    n = round(clip_seconds * sample_rate)
    return Take(label, clip_around(audio, utt, n), utt, sample_rate)


class SessionUI:
    """What a session shows and asks; the default is silent and keeps every take."""

    def prompt(self, label: str, index: int, total: int) -> None: ...

    def countdown(self, k: int) -> None: ...

    def speak(self, label: str, seconds: float) -> None:
        """Capture starts right after this: the moment to say `label`."""

    def level(self, db: float) -> None: ...

    def note(self, text: str) -> None: ...

    def decide(self, take: Take) -> str:
        """'keep', 'retake' or 'quit'."""
        return "keep"


def prompt_window(
    capture: Capture, ui: SessionUI, label: str, seconds: float, countdown: int
) -> np.ndarray:
    """Countdown (live sources only wait), then `seconds` of audio for `label`."""
    for k in range(countdown, 0, -1):
        ui.countdown(k)
        if capture.live:
            time.sleep(1.0)
    capture.flush()
    ui.speak(label, seconds)
    return capture.read(seconds, on_level=ui.level)


# ---------------------------------------------------------------- the session


@dataclass
class RecordSummary:
    out: str
    speaker: str
    source: str
    written: list[dict] = field(default_factory=list)  # {label, path, level_db, seconds}
    counts: dict = field(default_factory=dict)  # clips per label now on disk for this speaker
    background: str | None = None
    missed: int = 0  # windows where nothing was heard
    ended: str = "done"  # done | quit | input ended | interrupted

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def record_session(
    capture: Capture,
    out: str | os.PathLike,
    labels: list[str],
    count: int,
    speaker: str,
    ui: SessionUI | None = None,
    seconds: float = 2.0,
    countdown: int = 2,
    background_seconds: float = 5.0,
    min_level_db: float = VOICE_MIN_DB,
    max_misses: int = 3,
) -> RecordSummary:
    """Top every label up to `count` clips of `speaker` in `out`, prompting round-robin."""
    ui = ui or SessionUI()
    labels = _check_labels(labels)
    if seconds < CLIP_SECONDS:
        raise DataError(
            f"a capture window of {seconds:g} s is shorter than one clip; use 1.5 or more"
        )
    folder = ClipFolder(out, speaker)
    sr = getattr(capture, "sample_rate", SAMPLE_RATE)
    summary = RecordSummary(str(out), speaker, capture.source)
    need = {lab: max(0, count - folder.count(lab)) for lab in labels}
    order = [lab for k in range(max(need.values(), default=0)) for lab in labels if need[lab] > k]
    try:
        if background_seconds > 0 and not folder.has_background():
            ui.note(f"stay quiet: recording {background_seconds:g} s of the room for _silence_")
            capture.flush()
            room = capture.read(background_seconds, on_level=ui.level)
            summary.background = str(folder.write_background(room, sr))
        summary.ended = _prompt_all(
            capture, ui, folder, order, summary, seconds, countdown, min_level_db, max_misses
        )
    except EndOfInput:
        summary.ended = "input ended"
    except KeyboardInterrupt:
        summary.ended = "interrupted"
    summary.counts = {lab: folder.count(lab) for lab in labels}
    return summary


def _prompt_all(capture, ui, folder, order, summary, seconds, countdown, min_level_db, max_misses):
    sr = getattr(capture, "sample_rate", SAMPLE_RATE)
    for i, label in enumerate(order):
        misses = 0
        while True:
            ui.prompt(label, i + 1, len(order))
            audio = prompt_window(capture, ui, label, seconds, countdown)
            take = take_from(label, audio, sr, min_level_db)
            if take is None:
                summary.missed += 1
                misses += 1
                loudest = peak_level_db(audio, sr)
                if misses >= max_misses:
                    ui.note(
                        f"heard nothing {misses} times (loudest {loudest:.0f} dBFS); skipping {label!r}"
                    )
                    break
                ui.note(
                    f"heard nothing (loudest {loudest:.0f} dBFS, needs {min_level_db:g}); again"
                )
                continue
            decision = ui.decide(take)
            if decision == "quit":
                return "quit"
            if decision == "retake":
                continue
            path = folder.write(label, take.clip, sr)
            summary.written.append(
                {
                    "label": label,
                    "path": str(path),
                    "level_db": take.utterance.level_db,
                    "seconds": round(take.seconds, 3),
                }
            )
            break
    return "done"


def _check_labels(labels: list[str]) -> list[str]:
    labels = [lab.strip() for lab in labels if lab.strip()]
    if not labels:
        raise DataError("no labels to record; give them as --labels a,e,o")
    bad = [lab for lab in labels if lab.startswith(("_", ".")) or "/" in lab]
    if bad:
        raise DataError(
            f"labels {bad} cannot be recorded ({NOISE_DIR}, _silence_ and _unknown_ are made "
            "from other data; names are plain words)"
        )
    if len(set(labels)) != len(labels):
        raise DataError(f"labels {labels} repeat a name")
    return labels
