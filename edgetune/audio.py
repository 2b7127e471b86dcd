"""Audio in and out (device side: numpy, soundfile, soxr).

Every file enters through `load_audio`: any rate, width and channel count that
libsndfile reads (wav, flac, ogg) becomes mono float32 at the requested rate.
Problems raise AudioError naming the file; nothing on disk is modified.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from edgetune.errors import AudioError

# A labelled clip longer than this is a mistake (a whole recording dropped into a class folder).
MAX_CLIP_SECONDS = 30.0
# Background noise and streams are long by nature.
MAX_LONG_SECONDS = 4 * 3600.0


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int
    subtype: str

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def probe(path: str | os.PathLike) -> AudioInfo:
    """Header facts without decoding; AudioError if the file is not audio."""
    try:
        info = sf.info(str(path))
    except Exception as e:  # noqa: BLE001 (libsndfile says why in its own words)
        raise AudioError(f"{path}: not a readable audio file ({_reason(e)})") from None
    return AudioInfo(str(path), int(info.samplerate), int(info.channels), int(info.frames), info.subtype)


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    return text.replace(str(getattr(e, "filename", "")), "").strip(" :") or type(e).__name__


def load_audio(
    path: str | os.PathLike, sample_rate: int = 16000, max_seconds: float = MAX_CLIP_SECONDS
) -> np.ndarray:
    """Mono float32 at `sample_rate`; raises AudioError for unusable files."""
    info = probe(path)
    if info.frames == 0:
        raise AudioError(f"{path}: empty (0 samples); re-record or delete it")
    if info.seconds > max_seconds:
        raise AudioError(
            f"{path}: {info.seconds:.0f} s long, over the {max_seconds:.0f} s limit for a clip; "
            "cut it into clips (or put long noise recordings in _background_noise_/)"
        )
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 (any decoder failure is the file's)
        raise AudioError(f"{path}: cannot decode ({_reason(e)}); the file may be truncated") from None
    if len(data) == 0:
        raise AudioError(f"{path}: no decodable samples; the file may be truncated")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples; re-export it as PCM")
    return to_mono_rate(data, rate, sample_rate)


def to_mono_rate(data: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    """[n] or [n, channels] float audio -> mono float32 at sample_rate."""
    mono = data.mean(axis=1) if data.ndim == 2 else data
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32)
    return mono


WRITABLE_SUFFIXES = (".wav", ".flac")


def check_writable_audio(path: str | os.PathLike) -> Path:
    """The path, if `write_audio` can write its format (checked before long work, not after)."""
    path = Path(path)
    if path.suffix.lower() not in WRITABLE_SUFFIXES:
        raise AudioError(f"{path}: cannot write audio as '{path.suffix or 'no extension'}'; "
                         f"name it {' or '.join(WRITABLE_SUFFIXES)}")
    return path


def write_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM wav (or flac by extension) atomically: a temp file, then rename."""
    path = check_writable_audio(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        clipped = np.clip(np.asarray(audio, np.float32), -1.0, 1.0)
        sf.write(tmp, clipped, sample_rate, subtype="PCM_16")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
