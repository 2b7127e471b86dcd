"""The `instruments` task: notes, chords and short phrases of nine instrument
families, rendered from a General MIDI SoundFont, in the Speech Commands layout.

    OUT/<family>/p<program>k<key>_nohash_<n>.wav   16 kHz mono PCM16, exactly 1.0 s
    OUT/_background_noise_/*.wav                    white, pink, brown, mains hum (no babble)
    OUT/corpus.csv, OUT/corpus.json                 corpus.json records the music front end

The "speaker" of a clip is its (program, lowest key) pair, so the dataset's hash
rule puts whole (program, pitch) pairs in test: a test clip is a program at a key
that training never heard that program play. Each clip is planned from its own
(seed, label, index) stream, as in the speech corpus, so a rebuild is identical
and an interrupted one resumes.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune.audio import write_audio
from edgetune.data.synth import effects, noise
from edgetune.data.synth.soundfont import Note, SoundFont, resolve_soundfont
from edgetune.errors import DataError
from edgetune.files import write_json_atomic
from edgetune.frontend import FrontEnd

SR = effects.SR
CLIP_SAMPLES = SR
MARGIN = int(0.02 * SR)
FRONTEND = "music"

# Families by how they sound: the acoustic core of each General MIDI program group
# (0-based programs), four to five programs each. Left out are members that sound
# like another family or like a synthesiser (electric pianos, harpsichord and
# clavinet; accordion and harmonica; overdriven guitars; synth bass and brass;
# contrabass, which plays in the bass's register; pizzicato, harp, timpani; ...).
FAMILIES: dict[str, tuple[int, ...]] = {
    "piano": (0, 1, 2, 3),
    "mallet": (9, 11, 12, 13),
    "organ": (16, 17, 18, 19),
    "guitar": (24, 25, 26, 27),
    "bass": (32, 33, 34, 35),
    "strings": (40, 41, 42, 48, 49),
    "brass": (56, 57, 58, 60, 61),
    "reed": (65, 66, 68, 71),
    "flute": (72, 73, 74, 75),
}
# Playable keys (MIDI numbers, inclusive) per family, and where a program's own range differs.
KEYS = {"piano": (33, 96), "mallet": (60, 96), "organ": (36, 84), "guitar": (40, 79), "bass": (28, 55),
        "strings": (48, 88), "brass": (46, 82), "reed": (50, 84), "flute": (60, 96)}
PROGRAM_KEYS = {42: (36, 72), 57: (40, 72), 58: (28, 58), 60: (41, 77), 66: (44, 76), 72: (74, 100)}
# A SoundFont may leave a key without a sample (TimGM6mb's alto sax at 64): such
# a clip is played an octave lower, else higher, rather than written silent.
OCTAVE_FALLBACK = (0, -12, 12)
CHORDS = ((0, 4, 7), (0, 3, 7), (0, 4, 7, 10), (0, 7), (0, 12), (0, 3, 7, 10))
KINDS = (("note", 0.5), ("chord", 0.2), ("phrase", 0.3))
PHRASE_SECONDS = 0.9  # a phrase ends inside the clip, leaving room for onset and release
NOISES = ("white", "pink", "brown", "hum50", "hum60")


def _h(s: str) -> int:
    return zlib.crc32(s.encode("utf-8"))


@dataclass(frozen=True)
class NotePlan:
    label: str
    index: int
    program: int
    kind: str
    notes: tuple[Note, ...]
    fx: dict
    render_seed: int

    @property
    def speaker(self) -> str:
        return f"p{self.program:03d}k{min(n.key for n in self.notes):03d}"

    @property
    def relpath(self) -> str:
        return f"{self.label}/{self.speaker}_nohash_{self.index}.wav"

    def params(self) -> dict:
        return {"program": self.program, "kind": self.kind, "effects": self.fx,
                "notes": [[round(n.start, 4), round(n.seconds, 4), n.key, n.velocity] for n in self.notes]}


def _keys(program: int, label: str) -> tuple[int, int]:
    return PROGRAM_KEYS.get(program, KEYS[label])


def draw_notes(kind: str, lo: int, hi: int, rng: np.random.Generator) -> tuple[Note, ...]:
    """A single note, a (slightly strummed) chord, or a 2-5 note phrase, all inside [lo, hi]."""
    velocity = int(rng.integers(35, 128))
    if kind == "note":
        return (Note(0.0, float(rng.uniform(0.12, 0.8)), int(rng.integers(lo, hi + 1)), velocity),)
    if kind == "chord":
        shape = CHORDS[int(rng.integers(len(CHORDS)))]
        root = int(rng.integers(lo, max(lo, hi - shape[-1]) + 1))
        seconds = float(rng.uniform(0.2, 0.8))
        return tuple(Note(float(rng.uniform(0, 0.03)), seconds, min(root + step, hi), velocity)
                     for step in shape)
    notes, t, key = [], 0.0, int(rng.integers(lo, hi + 1))
    for _ in range(int(rng.integers(2, 6))):
        seconds = float(rng.uniform(0.08, 0.25))
        if notes and t + seconds > PHRASE_SECONDS:
            break
        jitter = int(rng.integers(-10, 11))
        notes.append(Note(t, seconds, key, int(np.clip(velocity + jitter, 20, 127))))
        t += seconds + float(rng.uniform(-0.02, 0.05))  # a little legato overlap, or a gap
        key = int(np.clip(key + rng.choice([-1, 1]) * rng.integers(1, 6), lo, hi))
    return tuple(notes)


def draw_noise(rng: np.random.Generator, p: float = 0.5) -> dict | None:
    if rng.random() >= p:
        return None
    return {"kind": NOISES[int(rng.integers(len(NOISES)))], "snr_db": round(float(rng.uniform(10, 30)), 2),
            "seed": int(rng.integers(2**31))}


def draw_eq(rng: np.random.Generator) -> dict:
    """Microphone and speaker colouring, milder than speech's (effects.draw_eq): an
    instrument's spectral envelope is what tells it apart, so resonances stay within
    +-4 dB; one in twelve is a telephone."""
    phone = bool(rng.random() < 1 / 12)
    return {
        "telephone": phone,
        "highpass_hz": round(float(rng.uniform(250, 400) if phone else rng.uniform(20, 120)), 1),
        "lowpass_hz": round(float(rng.uniform(3000, 3600) if phone else rng.uniform(5500, 8000)), 1),
        "tilt_db_per_oct": round(float(rng.uniform(-2.0, 1.0)), 2),
        "peaks": [{"hz": round(float(np.exp(rng.uniform(np.log(150), np.log(6000)))), 1),
                   "gain_db": round(float(rng.uniform(-4, 4)), 2),
                   "q": round(float(rng.uniform(0.7, 2.0)), 2)}],
    }


def plan_note(seed: int, label: str, index: int) -> NotePlan:
    """Everything random about one clip, from its own (seed, label, index) stream."""
    if label not in FAMILIES:
        raise DataError(f"unknown instrument family {label!r}; choose from {', '.join(FAMILIES)}")
    rng = np.random.default_rng([seed, _h("instrument:" + label), index])
    program = int(rng.choice(FAMILIES[label]))
    kind = KINDS[int(np.searchsorted(np.cumsum([p for _, p in KINDS]), rng.random()))][0]
    notes = draw_notes(kind, *_keys(program, label), rng)
    fx = {
        "bend_cents": round(float(rng.uniform(-30, 30)), 2),  # detuned, as real instruments are
        "eq": draw_eq(rng),
        "reverb": effects.draw_reverb(rng),
        "level": effects.draw_level(rng),
        "onset": effects.draw_onset(rng),
        "noise": draw_noise(rng),
    }
    return NotePlan(label, index, program, kind, notes, fx, int(rng.integers(2**63)))


def plan_instruments(clips_per_label: int, seed: int) -> list[NotePlan]:
    return [plan_note(seed, label, i) for label in FAMILIES for i in range(clips_per_label)]


def _noise(p: dict, n: int) -> np.ndarray:
    rng = np.random.default_rng(p["seed"])
    kind = p["kind"]
    if kind.startswith("hum"):
        return noise.hum(n, rng, float(kind[3:]))
    return {"white": noise.white, "pink": effects.pink_noise, "brown": noise.brown}[kind](n, rng)


def render_note(plan: NotePlan, sf: SoundFont) -> np.ndarray:
    """The 1.0 s clip for a plan: notes with their release, coloured, in a room, over noise."""
    fx = plan.fx
    x = _play(plan, sf)
    longest = CLIP_SAMPLES - 2 * MARGIN
    if len(x) > longest:  # a long release: cut it, faded over 50 ms
        x = x[:longest].copy()
        x[-int(0.05 * SR):] *= np.linspace(1, 0, int(0.05 * SR), dtype=np.float32)
    x = effects.apply_eq(x, fx["eq"])
    wet = effects.set_level(effects.apply_reverb(x, fx["reverb"]), fx["level"]["rms_dbfs"])
    clip, _ = effects.place(wet[: len(x)], wet, fx["onset"], CLIP_SAMPLES, MARGIN)
    rng = np.random.default_rng(plan.render_seed)
    clip += effects.pink_noise(CLIP_SAMPLES, rng) * np.float32(10 ** (fx["level"]["floor_dbfs"] / 20))
    if fx["noise"]:
        signal_rms = float(np.sqrt(np.mean(wet[: len(x)].astype(np.float64) ** 2)))
        clip += _noise(fx["noise"], CLIP_SAMPLES) * np.float32(signal_rms * 10 ** (-fx["noise"]["snr_db"] / 20))
    peak = float(np.abs(clip).max())
    if peak > 0.99:
        clip *= 0.99 / peak
    return clip.astype(np.float32)


def _play(plan: NotePlan, sf: SoundFont) -> np.ndarray:
    """The notes, trimmed of silence; an octave away where the SoundFont has no sample."""
    end = max(n.start + n.seconds for n in plan.notes)
    for shift in OCTAVE_FALLBACK:
        notes = [Note(n.start, n.seconds, int(np.clip(n.key + shift, 0, 127)), n.velocity) for n in plan.notes]
        x = effects.trim(sf.render(plan.program, notes, end + 0.5, plan.fx["bend_cents"]), top_db=40.0)
        if len(x) >= int(0.05 * SR) and np.isfinite(x).all():
            return x
    raise DataError(f"{sf.path}: program {plan.program} made no sound for keys "
                    f"{[n.key for n in plan.notes]}; give a complete General MIDI SoundFont")


_SOUNDFONTS: dict[str, SoundFont] = {}


def _soundfont(path: str) -> SoundFont:
    if path not in _SOUNDFONTS:
        _SOUNDFONTS[path] = SoundFont(path, SR)
    return _SOUNDFONTS[path]


def _render_job(job) -> float:
    out_dir, sf_path, plan = job
    t0 = time.perf_counter()
    write_audio(Path(out_dir) / plan.relpath, render_note(plan, _soundfont(sf_path)), SR)
    return time.perf_counter() - t0


def _soundfont_id(path: Path) -> dict:
    return {"name": path.name, "bytes": path.stat().st_size}


def _check_resume(out: Path, sf: dict) -> None:
    """Refuse to complete a corpus that another SoundFont began: the clips would mix."""
    info = out / "corpus.json"
    if not info.is_file():
        return
    before = json.loads(info.read_text()).get("soundfont")
    if before is not None and before != sf:
        raise DataError(f"{out} was rendered with the SoundFont {before['name']}, not {sf['name']}; "
                        "choose another --out")


def _write_noise(out: Path, seed: int) -> list[str]:
    """`_background_noise_/` as the speech corpus writes it, less the babble (speech
    engines are not needed to hear instruments)."""
    return noise.write_background_noise(out, seed, {}, {}, [])


def _render_all(jobs: list, workers: int, progress: bool) -> float:
    from tqdm import tqdm

    cpu = 0.0
    with tqdm(total=len(jobs), desc="synth instruments", unit="clip", disable=not progress,
              dynamic_ncols=True) as bar:
        if workers == 1:
            for job in jobs:
                cpu += _render_job(job)
                bar.update(1)
            return cpu
        # spawn, as the speech corpus does: the renderer holds native state
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for seconds in pool.imap_unordered(_render_job, jobs, chunksize=16):
                cpu += seconds
                bar.update(1)
    return cpu


def build_instruments(out_dir, clips_per_label: int = 300, seed: int = 0, workers: int | None = None,
                      soundfont: str | Path | None = None, progress: bool = True, noise_files: bool = True) -> dict:
    """Write (or complete) the instruments corpus in `out_dir`; returns a summary dict."""
    t0 = time.perf_counter()
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another --out")
    if clips_per_label < 1:
        raise DataError("clips per label must be at least 1")
    sf_path = resolve_soundfont(soundfont)
    _soundfont(str(sf_path)).check_programs([p for progs in FAMILIES.values() for p in progs])
    sf_id = _soundfont_id(sf_path)
    _check_resume(out, sf_id)
    plans = plan_instruments(clips_per_label, seed)
    out.mkdir(parents=True, exist_ok=True)
    noise_written = _write_noise(out, seed) if noise_files else []
    jobs = [(str(out), str(sf_path), p) for p in plans if not (out / p.relpath).exists()]
    workers = min(max(1, int(workers or os.cpu_count() or 1)), max(1, len(jobs)))
    cpu = _render_all(jobs, workers, progress)
    info = _write_manifest(out, plans, seed, clips_per_label, sf_path, sf_id)
    elapsed = time.perf_counter() - t0
    return {**info, "out_dir": str(out), "clips": len(plans), "speakers": len({p.speaker for p in plans}),
            "written": len(jobs), "skipped": len(plans) - len(jobs), "noise_written": noise_written,
            "seconds": round(elapsed, 3), "render_cpu_seconds": round(cpu, 3), "workers": workers}


def _write_manifest(out: Path, plans: list[NotePlan], seed: int, clips_per_label: int, sf_path: Path,
                    sf_id: dict) -> dict:
    sf = _soundfont(str(sf_path))
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(["path", "label", "speaker", "engine", "word", "params"])
    for p in plans:
        wr.writerow([p.relpath, p.label, p.speaker, "soundfont", sf.preset_name(p.program),
                     json.dumps(p.params(), sort_keys=True, separators=(",", ":"))])
    tmp = out / f".corpus.csv.{os.getpid()}.tmp"
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, out / "corpus.csv")
    counts: dict[str, int] = {}
    for p in plans:
        counts[p.label] = counts.get(p.label, 0) + 1
    info = {
        "format": "edgetune.synth/1",
        "task": "instruments",
        "seed": seed,
        "words": list(FAMILIES),
        "labels": list(FAMILIES),
        "clips_per_word": clips_per_label,
        "counts": counts,
        "n_clips": len(plans),
        "engines": ["soundfont"],
        "soundfont": sf_id,
        "programs": {lab: {str(p): sf.preset_name(p) for p in progs} for lab, progs in FAMILIES.items()},
        "frontend": FrontEnd.preset(FRONTEND).to_dict(),
        "frontend_preset": FRONTEND,
        "background_noise": sorted(f.name for f in (out / "_background_noise_").glob("*.wav")),
        "recipe": {
            "sample_rate": SR, "clip_seconds": CLIP_SAMPLES / SR,
            "notes": "single notes 50% (0.12-0.8 s), chords 20% (2-4 keys, strummed 0-30 ms, 0.2-0.8 s), "
                     "phrases 30% (2-5 notes of 0.08-0.25 s within 0.9 s, steps of 1-5 semitones); velocity 35-127; "
                     "keys within each family's (or program's) playable range; release tail up to 0.5 s",
            "split": "speaker = program and lowest key: held-out (program, key) pairs in val/test",
            "effects": "detune +-30 cents; EQ (high-pass 20-120 Hz, low-pass 5.5-8 kHz, tilt -2..+1 dB/oct, "
                       "one resonance +-4 dB; 1/12 telephone); reverb p=0.5 rt60 0.1-0.6 s; "
                       "RMS -34..-14 dBFS; onset beta(1.6,1.6); pink floor -78..-58 dBFS; "
                       "noise p=0.5 (white/pink/brown/50 or 60 Hz hum) at 10-30 dB SNR",
        },
    }
    write_json_atomic(out / "corpus.json", info)
    return info
