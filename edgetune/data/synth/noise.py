"""Long background-noise recordings for `_background_noise_/` (16 kHz wav).

white, pink, brown, mains hum (50 Hz and 60 Hz, with harmonics and a little hiss)
and babble (several synthetic talkers at once). Deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetune.audio import write_audio
from edgetune.data.synth import effects

SR = effects.SR

NOISE_FILES = ("white_noise.wav", "pink_noise.wav", "brown_noise.wav", "hum_50hz.wav", "hum_60hz.wav",
               "babble.wav")


def _seconds(rng) -> float:
    return float(rng.uniform(30, 60))


def white(n, rng):
    return rng.standard_normal(n).astype(np.float32)


def brown(n, rng):
    x = np.cumsum(rng.standard_normal(n))
    # remove the drift with a gentle high-pass (leaky integrator), keep 1/f^2 above ~5 Hz
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(n, 1 / SR)
    spec *= f**2 / (f**2 + 5.0**2)
    x = np.fft.irfft(spec, n)
    return (x / (x.std() + 1e-12)).astype(np.float32)


def hum(n, rng, mains: float):
    t = np.arange(n) / SR
    x = np.zeros(n)
    drift = 1 + 0.002 * np.sin(2 * np.pi * rng.uniform(0.01, 0.05) * t)  # slow mains-frequency drift
    for k in range(1, 12):
        amp = rng.uniform(0.3, 1.0) / k ** rng.uniform(0.7, 1.5)
        if k % 2 == 0:
            amp *= rng.uniform(0.2, 0.6)  # odd harmonics dominate (transformers, rectifiers)
        x += amp * np.sin(2 * np.pi * mains * k * drift * t + rng.uniform(0, 2 * np.pi))
    x /= x.std() + 1e-12
    x += 0.05 * effects.pink_noise(n, rng)
    return x.astype(np.float32)


def babble(n, rng, words: list[str], engines: dict, voices: dict, talkers: int = 6):
    """`talkers` overlapping streams of random short phrases from random voices."""
    from edgetune.data.synth.engines import Word

    out = np.zeros(n, np.float64)
    names = [e for e in engines if voices.get(e)]
    for k in range(talkers):
        stream = np.zeros(n, np.float64)
        pos = int(rng.integers(0, SR))
        # eSpeak talks fast and cheap; Piper (~20x slower) is one talker of the crowd
        if "espeak" in names and "piper" in names:
            ename = "piper" if k == talkers - 1 else "espeak"
        else:
            ename = names[k % len(names)]
        eng = engines[ename]
        voice = voices[ename][rng.integers(len(voices[ename]))]
        while pos < n:
            text = " ".join(words[i] for i in rng.integers(0, len(words), int(rng.integers(3, 9))))
            audio, rate = eng.say(voice, Word(text, text), rng)
            audio = effects.resample_speed(audio, rate, 1.0)
            seg = audio[: n - pos]
            stream[pos : pos + len(seg)] += seg
            pos += len(audio) + int(rng.uniform(0.05, 0.6) * SR)
        rms = np.sqrt(np.mean(stream**2)) + 1e-12
        out += stream / rms * rng.uniform(0.5, 1.0)
    return (out / (out.std() + 1e-12)).astype(np.float32)


def write_background_noise(out_dir: str | Path, seed: int, engines: dict, voices: dict,
                           words: list[str]) -> list[str]:
    """Write the noise files that are not there yet; returns the names written."""
    folder = Path(out_dir) / "_background_noise_"
    written = []
    for i, name in enumerate(NOISE_FILES):
        path = folder / name
        if path.exists():
            continue
        rng = np.random.default_rng([seed, 7919, i])
        n = int(_seconds(rng) * SR)
        if name.startswith("white"):
            x = white(n, rng)
        elif name.startswith("pink"):
            x = effects.pink_noise(n, rng)
        elif name.startswith("brown"):
            x = brown(n, rng)
        elif name == "hum_50hz.wav":
            x = hum(n, rng, 50.0)
        elif name == "hum_60hz.wav":
            x = hum(n, rng, 60.0)
        else:
            if not engines:
                continue
            x = babble(n, rng, words, engines, voices)
        # about -26 dBFS RMS with headroom; the loader mixes at its own SNR
        x = x * 0.05
        peak = float(np.abs(x).max())
        if peak > 0.9:
            x *= 0.9 / peak
        write_audio(path, x, SR)
        written.append(name)
    return written
