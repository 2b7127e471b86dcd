"""The front end: log-mel features, defined once (device side: numpy only).

`FrontEnd` holds every constant; `log_mel` turns a clip into features and
`StreamingLogMel` produces the same frames from audio arriving in chunks of any
size. The host side (`edgetune.train.features`) computes the same thing with
torchaudio on batches; a test holds the two within 1e-4.

A frame is `win_length` samples starting every `hop_length` samples (no centre
padding, so a stream needs no look-ahead), Hann-windowed (periodic), zero-padded
to `n_fft`, power spectrum, mel filterbank (HTK scale without normalisation, or
`mel_scale="slaney"`: Slaney's scale with area-normalised filters, librosa's
default), then log(mel + log_floor). No per-utterance normalisation: a stream has no utterance.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

import numpy as np

# Power added before the log: about the level white noise at -70 dBFS reaches in a mel
# band. Quieter audio (a recorder's own floor, the digital zeros that pad a short clip)
# all looks alike to the model. At 1e-6 the zeros that pad a trimmed real recording lay
# 2 log units under the quietest training floor; measured on real spoken digits
# (`fsdd_digits`, README "Quiet is quiet"): 68.5% -> 71.4%, mean of 3 seeds.
LOG_FLOOR = 7.5e-5


@dataclass(frozen=True)
class FrontEnd:
    sample_rate: int = 16000
    clip_seconds: float = 1.0
    window_ms: float = 30.0
    hop_ms: float = 10.0
    n_fft: int = 512
    n_mels: int = 40
    f_min: float = 20.0
    f_max: float = 7600.0
    log_floor: float = LOG_FLOOR
    mel_scale: str = "htk"

    def __post_init__(self):
        if self.mel_scale not in MEL_SCALES:
            raise ValueError(f"mel_scale {self.mel_scale!r}: choose one of {', '.join(MEL_SCALES)}")
        if self.win_length > self.n_fft:
            raise ValueError(f"window of {self.win_length} samples exceeds n_fft {self.n_fft}")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= {self.sample_rate / 2}")

    @property
    def win_length(self) -> int:
        return round(self.sample_rate * self.window_ms / 1000)

    @property
    def hop_length(self) -> int:
        return round(self.sample_rate * self.hop_ms / 1000)

    @property
    def clip_samples(self) -> int:
        return round(self.sample_rate * self.clip_seconds)

    @property
    def n_frames(self) -> int:
        """Frames in one clip: the model's time dimension."""
        return frames_for(self, self.clip_samples)

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FrontEnd:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown front-end fields {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def preset(cls, name: str) -> FrontEnd:
        """A named front end: `speech` (the defaults) or `music` (see PRESETS)."""
        if name not in PRESETS:
            raise ValueError(f"unknown front-end preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**PRESETS[name])

    @cached_property
    def _window(self) -> np.ndarray:
        return hann_window(self.win_length)

    @cached_property
    def _filterbank(self) -> np.ndarray:
        return mel_filterbank(self)


# Instrument timbre lives in harmonics up to the top of a 16 kHz recording, and a bass
# note's partials are only ~40 Hz apart: a 64 ms window (1024-point FFT, 15.6 Hz bins)
# resolves them where a 30 ms one blurs them, and 64 bands keep the upper octaves
# apart. Notes change more slowly than phonemes: a 20 ms hop halves the frames (and
# the model's work) that 64 bands would otherwise double.
# Google's speech_embedding (edgetune.nets.sembed) was trained on these features:
# 25 ms windows, 32 Slaney bands 60-3800 Hz (read from openWakeWord's melspectrogram.onnx;
# its filterbank matches this one to 1e-6). Slaney's filters are area-normalised, so a
# band holds ~100x less power than an HTK one: the floor is 100x lower to gate the same
# quiet.
PRESETS: dict[str, dict] = {
    "speech": {},
    "music": {"window_ms": 64.0, "hop_ms": 20.0, "n_fft": 1024, "n_mels": 64, "f_min": 30.0,
              "f_max": 8000.0},
    "sembed": {"window_ms": 25.0, "n_mels": 32, "f_min": 60.0, "f_max": 3800.0, "mel_scale": "slaney",
               "log_floor": LOG_FLOOR / 100},
}


def with_current_floor(fe: FrontEnd) -> FrontEnd:
    """`fe` with the floor raised to LOG_FLOOR if it was lower (a base model trained before
    it): the floor only gates near-silence, and fine-tuning adapts to it."""
    if fe.mel_scale != "htk":  # LOG_FLOOR is an HTK band's; Slaney front ends came after it
        return fe
    return dataclasses.replace(fe, log_floor=max(fe.log_floor, LOG_FLOOR))


def frames_for(fe: FrontEnd, n_samples: int) -> int:
    if n_samples < fe.win_length:
        return 0
    return 1 + (n_samples - fe.win_length) // fe.hop_length


def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window, as torch.hann_window(n) makes it."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


# Slaney's mel scale: linear (200/3 Hz a mel) up to 1 kHz, logarithmic above.
_SLANEY_HZ_PER_MEL, _SLANEY_BREAK_HZ, _SLANEY_LOG_STEP = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL


def _hz_to_slaney(f):
    f = np.asarray(f, dtype=np.float64)
    log_part = _SLANEY_BREAK_MEL + np.log(np.maximum(f, _SLANEY_BREAK_HZ) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
    return np.where(f < _SLANEY_BREAK_HZ, f / _SLANEY_HZ_PER_MEL, log_part)


def _slaney_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    log_part = _SLANEY_BREAK_HZ * np.exp(_SLANEY_LOG_STEP * (np.maximum(m, _SLANEY_BREAK_MEL) - _SLANEY_BREAK_MEL))
    return np.where(m < _SLANEY_BREAK_MEL, m * _SLANEY_HZ_PER_MEL, log_part)


MEL_SCALES = {"htk": (_hz_to_mel, _mel_to_hz), "slaney": (_hz_to_slaney, _slaney_to_hz)}


def mel_filterbank(fe: FrontEnd) -> np.ndarray:
    """[n_freqs, n_mels] triangular filters, as torchaudio.functional.melscale_fbanks builds
    them: mel_scale="htk" with norm=None, or mel_scale="slaney" with norm="slaney"."""
    to_mel, to_hz = MEL_SCALES[fe.mel_scale]
    all_freqs = np.linspace(0, fe.sample_rate // 2, fe.n_freqs)
    f_pts = to_hz(np.linspace(to_mel(fe.f_min), to_mel(fe.f_max), fe.n_mels + 2))
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up))
    if fe.mel_scale == "slaney":  # each filter's area is 1: a band's power does not grow with its width
        fb *= 2.0 / (f_pts[2:] - f_pts[:-2])
    return fb.astype(np.float32)


def _frames_to_log_mel(fe: FrontEnd, frames: np.ndarray) -> np.ndarray:
    spectrum = np.fft.rfft(frames * fe._window, n=fe.n_fft, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    return np.log(power.astype(np.float32) @ fe._filterbank + fe.log_floor).astype(np.float32)


def log_mel(fe: FrontEnd, audio: np.ndarray) -> np.ndarray:
    """[frames, n_mels] float32 features of a mono float32 clip at fe.sample_rate."""
    audio = np.asarray(audio, dtype=np.float32)
    n = frames_for(fe, len(audio))
    if n == 0:
        return np.zeros((0, fe.n_mels), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(audio, fe.win_length)[:: fe.hop_length][:n]
    return _frames_to_log_mel(fe, frames)


def fit_clip(fe: FrontEnd, audio: np.ndarray) -> np.ndarray:
    """Centre-crop or zero-pad a clip to exactly fe.clip_samples."""
    n = fe.clip_samples
    if len(audio) >= n:
        start = (len(audio) - n) // 2
        return np.asarray(audio[start : start + n], dtype=np.float32)
    pad = n - len(audio)
    return np.pad(np.asarray(audio, dtype=np.float32), (pad // 2, pad - pad // 2))


def clip_features(fe: FrontEnd, audio: np.ndarray) -> np.ndarray:
    """Model input for one clip: [1, n_frames, n_mels]."""
    return log_mel(fe, fit_clip(fe, audio))[None]


class StreamingLogMel:
    """The same frames as `log_mel`, from chunks of any size; each frame computed once.

    Keeps only the last win_length - hop_length samples between calls."""

    def __init__(self, fe: FrontEnd):
        self.fe = fe
        self.reset()

    def reset(self) -> None:
        self._pending = np.zeros(0, np.float32)

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Feed samples; returns the [k, n_mels] frames completed by them (k may be 0)."""
        fe = self.fe
        audio = np.concatenate([self._pending, np.asarray(chunk, np.float32).reshape(-1)])
        n = frames_for(fe, len(audio))
        if n == 0:
            self._pending = audio
            return np.zeros((0, fe.n_mels), np.float32)
        consumed = n * fe.hop_length
        self._pending = audio[consumed:]
        frames = np.lib.stride_tricks.sliding_window_view(audio, fe.win_length)[:: fe.hop_length][:n]
        return _frames_to_log_mel(fe, frames)
