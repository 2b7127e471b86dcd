"""Effects that make a synthetic word sound recorded (numpy + soxr).

Each `draw_*` picks random settings (a plain dict, stored in the manifest); the
matching function applies them. There is deliberately no uniform time-stretch:
stretching words to an assumed duration hurt accuracy on real voices; durations
come from the engines' speaking rates, and speed/formant perturbation
(resampling, 0.85-1.15) changes duration, pitch and formants together.
"""

from __future__ import annotations

import numpy as np
import soxr

SR = 16000


# ---------------------------------------------------------------------------- timing
def resample_speed(audio: np.ndarray, rate: float, speed: float = 1.0, sr_out: int = SR) -> np.ndarray:
    """Resample `audio` (at `rate`) to sr_out, sped up by `speed` (formants, pitch x speed;
    duration / speed): the signal is treated as if recorded at rate * speed."""
    audio = np.asarray(audio, np.float32)
    src = float(rate) * float(speed)
    if abs(src - sr_out) < 1e-6:
        return audio.copy()
    return soxr.resample(audio, src, sr_out, quality="HQ").astype(np.float32)


# Engines render clean audio, so trimming need only remove their digital silence. Weak
# consonants sit 30-45 dB under the vowel (the /f/ of "off", the released /p/ of "up"):
# trimming at -30 dB cut them, and "up" and "off" became their bare vowels.
WORD_TRIM_DB = 50.0


def trim(audio: np.ndarray, sr: int = SR, top_db: float = WORD_TRIM_DB, frame_ms: float = 10.0,
         pad_ms: float = 10.0) -> np.ndarray:
    """Cut leading/trailing parts quieter than `top_db` below the loudest 10 ms frame."""
    audio = np.asarray(audio, np.float32)
    f = max(1, int(sr * frame_ms / 1000))
    n = len(audio) // f
    if n == 0:
        return audio
    energy = (audio[: n * f].reshape(n, f).astype(np.float64) ** 2).mean(axis=1)
    peak = energy.max()
    if peak <= 0:
        return audio[:0]
    loud = np.flatnonzero(energy >= peak * 10 ** (-top_db / 10))
    pad = int(sr * pad_ms / 1000)
    start = max(0, loud[0] * f - pad)
    end = min(len(audio), (loud[-1] + 1) * f + pad)
    return audio[start:end]


# ---------------------------------------------------------------------------- colour
def draw_eq(rng: np.random.Generator) -> dict:
    """Microphone colouring: high-pass, a low-pass, a spectral tilt and 1-2 resonances;
    one in six is a telephone (8 kHz, 300-3400 Hz band)."""
    phone = bool(rng.random() < 1 / 6)
    return {
        "telephone": phone,
        "highpass_hz": round(float(rng.uniform(250, 400) if phone else np.exp(rng.uniform(np.log(40), np.log(250)))), 1),
        "lowpass_hz": round(float(rng.uniform(3000, 3600) if phone else rng.uniform(4500, 8000)), 1),
        "tilt_db_per_oct": round(float(rng.uniform(-3.0, 2.0)), 2),
        "peaks": [
            {"hz": round(float(np.exp(rng.uniform(np.log(150), np.log(6000)))), 1),
             "gain_db": round(float(rng.uniform(-9, 9)), 2),
             "q": round(float(rng.uniform(0.7, 3.0)), 2)}
            for _ in range(int(rng.integers(1, 3)))
        ],
    }


def apply_eq(audio: np.ndarray, p: dict, sr: int = SR) -> np.ndarray:
    audio = np.asarray(audio, np.float32)
    if len(audio) == 0:
        return audio
    if p.get("telephone"):
        # through an 8 kHz channel and back: nothing above 4 kHz survives
        n0 = len(audio)
        audio = soxr.resample(soxr.resample(audio, sr, 8000, quality="HQ"), 8000, sr, quality="HQ")[:n0]
        audio = np.pad(audio, (0, n0 - len(audio))).astype(np.float32)
    n = 1 << int(np.ceil(np.log2(len(audio) + 1024)))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    f = np.maximum(freqs, 1.0)
    gain_db = np.zeros_like(freqs)
    # 2nd-order high-pass and low-pass magnitudes
    gain_db += -10 * np.log10(1 + (p["highpass_hz"] / f) ** 4)
    gain_db += -10 * np.log10(1 + (f / p["lowpass_hz"]) ** (8 if p.get("telephone") else 4))
    gain_db += p["tilt_db_per_oct"] * np.log2(f / 1000.0)
    for pk in p["peaks"]:
        # a resonance on a log-frequency axis, width set by q
        width = 1.0 / (2 * pk["q"])
        gain_db += pk["gain_db"] * np.exp(-0.5 * (np.log2(f / pk["hz"]) / width) ** 2)
    gain = 10 ** (gain_db / 20)
    out = np.fft.irfft(np.fft.rfft(audio, n) * gain, n)[: len(audio)]
    return out.astype(np.float32)


# ---------------------------------------------------------------------------- room
def draw_reverb(rng: np.random.Generator, p_room: float = 0.5) -> dict | None:
    if rng.random() >= p_room:
        return None
    return {
        "rt60": round(float(rng.uniform(0.1, 0.6)), 3),
        "wet": round(float(rng.uniform(0.08, 0.5)), 3),  # tail energy relative to the direct sound
        "predelay_ms": round(float(rng.uniform(1, 12)), 2),
        "damping_hz": round(float(rng.uniform(2500, 7000)), 1),
        "seed": int(rng.integers(2**31)),
    }


def room_impulse(p: dict, sr: int = SR) -> np.ndarray:
    """Direct path + exponentially decaying noise (a small room), low-passed tail."""
    rng = np.random.default_rng(p["seed"])
    n = int(sr * min(1.0, p["rt60"] * 1.1))
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.908 * t / p["rt60"])  # -60 dB at rt60
    # damping: one-pole low-pass on the tail (high frequencies decay first in real rooms)
    a = np.exp(-2 * np.pi * p["damping_hz"] / sr)
    spec = np.fft.rfft(tail, 2 * n)
    w = np.fft.rfftfreq(2 * n, 1 / sr) * 2 * np.pi / sr
    spec *= (1 - a) / np.abs(1 - a * np.exp(-1j * w))
    tail = np.fft.irfft(spec, 2 * n)[:n]
    d = int(sr * p["predelay_ms"] / 1000)
    tail[: d + 1] = 0
    tail *= np.sqrt(p["wet"] / max(np.sum(tail**2), 1e-12))
    tail[0] = 1.0
    return tail.astype(np.float32)


def apply_reverb(audio: np.ndarray, p: dict | None, sr: int = SR) -> np.ndarray:
    """Convolve; the result is longer than the input by the room's tail."""
    if p is None or len(audio) == 0:
        return np.asarray(audio, np.float32)
    rir = room_impulse(p, sr)
    m = len(audio) + len(rir) - 1
    n = 1 << int(np.ceil(np.log2(m)))
    out = np.fft.irfft(np.fft.rfft(audio, n) * np.fft.rfft(rir, n), n)[:m]
    return out.astype(np.float32)


# ---------------------------------------------------------------------------- level, placement
def draw_level(rng: np.random.Generator) -> dict:
    return {"rms_dbfs": round(float(rng.uniform(-34, -14)), 2),
            "floor_dbfs": round(float(rng.uniform(-78, -58)), 2)}


def set_level(audio: np.ndarray, rms_dbfs: float, peak_max: float = 0.95) -> np.ndarray:
    audio = np.asarray(audio, np.float32)
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if len(audio) else 0.0
    if rms <= 0:
        return audio
    g = 10 ** (rms_dbfs / 20) / rms
    peak = float(np.abs(audio).max()) * g
    if peak > peak_max:
        g *= peak_max / peak
    return (audio * g).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f power noise by spectral shaping, unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n)
    return (x / (x.std() + 1e-12)).astype(np.float32)


def draw_onset(rng: np.random.Generator) -> float:
    """Where the word starts within the free space of the clip, 0..1 (more often near the middle)."""
    return round(float(rng.beta(1.6, 1.6)), 4)


def place(word: np.ndarray, tail: np.ndarray, onset: float, clip_samples: int = SR,
          margin: int = int(0.02 * SR)) -> tuple[np.ndarray, int]:
    """Put the word (plus its reverb tail, `tail` starts with the word) in a silent clip.

    The word itself always lies whole inside the clip (`margin` samples from each
    edge when it fits with them); the reverb tail may be cut at the end, faded.
    Returns the clip and the word's start sample."""
    n = len(word)
    if n > clip_samples:
        raise ValueError(f"word of {n} samples does not fit in a clip of {clip_samples}")
    free = clip_samples - n
    m = min(margin, free // 2)
    start = m + round(float(onset) * (free - 2 * m))
    clip = np.zeros(clip_samples, np.float32)
    seg = tail[: clip_samples - start].copy()
    if len(seg) < len(tail):  # tail cut: 10 ms fade (never inside the word itself)
        k = min(int(0.01 * SR), len(seg) - n)
        if k > 0:
            seg[len(seg) - k:] *= np.linspace(1, 0, k, dtype=np.float32)
    clip[start : start + len(seg)] = seg
    return clip, start
