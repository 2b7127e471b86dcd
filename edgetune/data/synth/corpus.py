"""Build the built-in synthetic corpus in the Speech Commands layout.

    OUT/<label>/<speaker>_nohash_<n>.wav     16 kHz mono PCM16, exactly 1.0 s
    OUT/_background_noise_/*.wav             30-60 s of white/pink/brown/hum/babble
    OUT/corpus.csv                           path,label,speaker,engine,word,params
    OUT/corpus.json                          task, seed, words, counts, engines, recipe

Every clip is planned from its own seed, derived from (seed, label, index), so a
clip is the same whichever worker renders it, and a rerun skips files that exist
(an interrupted build resumes). Voice identities derive from the seed alone, never
from the task: a speaker id (and so its hash-rule split) is the same in every task.
"""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune.audio import write_audio
from edgetune.data.synth import effects
from edgetune.data.synth.engines import (
    VOWEL_LANGS,
    Voice,
    Word,
    available_engines,
    get_engine,
    parse_engine_weights,
)
from edgetune.errors import DataError
from edgetune.files import write_text_atomic

SR = effects.SR
CLIP_SAMPLES = SR  # 1.0 s
MARGIN = int(0.02 * SR)  # a word never starts/ends closer than this to the clip edge

COMMANDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOWELS = ["a", "e", "i", "o", "u"]
# Other short words: the `_unknown_` class (and, in the `all` task, words of their own).
UNKNOWN_WORDS = [
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
    "backward", "forward", "follow", "learn", "visual", "hello", "green", "red", "blue", "light",
    "water", "music", "table", "window", "open", "close", "start", "play", "pause", "next",
    "back", "help", "fish", "moon", "sun", "book", "car", "baby", "coffee", "paper",
    "yellow", "sister", "garden", "money", "kitchen",
]
# Words that sound like a target word but are not it (never a homophone: no "won", "for",
# "know"), for `near_miss_clips`: a stream's false accepts are other whole words heard as a
# target ("tree" as "three"), and rejecting them takes examples close to the boundary.
NEAR_MISSES = {
    "zero": ["hero", "zebra"], "one": ["run", "fun"], "two": ["tube", "shoe"],
    "three": ["free", "tree"], "four": ["floor", "door"], "five": ["fine", "hive"],
    "six": ["sticks", "sick"], "seven": ["heaven", "sever"], "eight": ["late", "gate"],
    "nine": ["mine", "line"],
    "yes": ["yet", "chess"], "no": ["note", "snow"], "up": ["cup", "pup"], "down": ["town", "gown"],
    "left": ["lift", "theft"], "right": ["ride", "bright"], "on": ["john", "gone"],
    "off": ["cough", "of"], "stop": ["shop", "step"], "go": ["goal", "dough"],
}
# Near-miss clips are numbered from here, so they never share a file name or a random stream
# with the other `_unknown_` clips, however many of those there are.
NEAR_MISS_INDEX0 = 1_000_000
TASKS = {"commands": COMMANDS, "digits": DIGITS, "vowels": VOWELS,
         "all": COMMANDS + DIGITS + VOWELS + UNKNOWN_WORDS}
UNKNOWN = "_unknown_"

N_VOICES = {"espeak": 100, "piper": 40, "flite": 40, "kokoro": 40, "mbrola": 60, "rhvoice": 40, "pico": 20}
# Measured (tools/eval_real.py, digits vs real FSDD, one seed): adding Flite +3 points, adding
# Kokoro alone -2 and it renders ~20x slower; Kokoro stays an option (--engines ...,kokoro=0.15).
# MBROLA (real speakers' diphones) at a quarter of the clips: 84.9% against 82.4% over 3 seeds
# of tools/finetune_real.py (at half, 82.6% over 2). Where it is not installed the others share its part.
# RHVoice at a fifth of the clips: 89.7% over 2 seeds against 90.4% (600 a word; with Pico at a tenth too,
# 88.2%, seed 0): options, not in the default (README, "Two more engines").
DEFAULT_ENGINES = "espeak=0.3,piper=0.3,flite=0.15,mbrola=0.25"
# The clips a word that N_VOICES is sized for. A larger corpus draws more speakers in
# proportion rather than more takes of the same ones: real digits (tools/finetune_real.py,
# seeds 0-2), 600 clips a digit from 480 voices 90.4% against 89.6% and 88.4% for two draws
# of 240 voices at 300 (README, "More speakers, not more takes").
CLIPS_PER_VOICE_SET = 300
# One uniform draw per clip picks its engine against cumulative shares in this fixed
# order. Piper first: with espeak and piper alone this is the old `piper_fraction` rule
# (piper if u < fraction, else espeak), so corpora built before keep their plans.
DRAW_ORDER = ("piper", "espeak", "flite", "kokoro", "mbrola", "rhvoice", "pico")


def _h(s: str) -> int:
    return zlib.crc32(s.encode("utf-8"))


def make_word(w: str) -> Word:
    if w in VOWELS:
        return Word(w, w, VOWEL_LANGS)
    return Word(w, w)


def voice_counts(clips_per_word: int) -> dict[str, int]:
    """Voices per engine for a corpus of `clips_per_word`: N_VOICES up to CLIPS_PER_VOICE_SET,
    more in proportion above it. Each engine draws its voices one after another from its own
    stream, so the larger set starts with the smaller one's voices."""
    scale = max(1.0, clips_per_word / CLIPS_PER_VOICE_SET)
    return {name: math.ceil(n * scale) for name, n in N_VOICES.items()}


def voice_identities(seed: int, engines=("espeak", "piper"),
                     counts: dict[str, int] | None = None) -> dict[str, list[Voice]]:
    """The voice identities (one identity = one speaker) for a seed; independent of the task
    and of which other engines are used (each engine draws from its own stream)."""
    counts = {**N_VOICES, **(counts or {})}
    return {name: get_engine(name).voices(np.random.default_rng([seed, _h("voices:" + name)]), counts[name])
            for name in engines}


@dataclass(frozen=True)
class ClipPlan:
    label: str
    index: int
    word: Word
    engine: str
    voice: Voice
    utt: dict
    fx: dict
    render_seed: int

    @property
    def relpath(self) -> str:
        return f"{self.label}/{self.voice.speaker}_nohash_{self.index}.wav"

    def params(self) -> dict:
        return {"voice": self.voice.params, "utterance": self.utt, "effects": self.fx}


def choose_engine(u: float, word: Word, voices: dict[str, list[Voice]],
                  weights: dict[str, float] | None = None) -> str:
    """The engine whose share of [0, 1) holds `u`, among those with voices that can say `word`
    (weights None: equal shares)."""
    names = [n for n in DRAW_ORDER if voices.get(n) and (weights is None or weights.get(n, 0) > 0)
             and _engine(n).can_say(word)]
    if not names:
        raise DataError(f"no chosen speech engine can say {word.label!r} "
                        f"({', '.join(n for n in DRAW_ORDER if voices.get(n))}); add espeak or piper")
    shares = np.asarray([1.0 if weights is None else weights[n] for n in names])
    cum = np.cumsum(shares) / shares.sum()
    return names[min(int(np.searchsorted(cum, u, side="right")), len(names) - 1)]


def plan_clip(seed: int, label: str, index: int, word: Word, voices: dict[str, list[Voice]],
              weights: dict[str, float] | None = None) -> ClipPlan:
    """Everything random about one clip, drawn from its own (seed, label, index) stream."""
    rng = np.random.default_rng([seed, _h("clip:" + label), index])
    engine = choose_engine(rng.random(), word, voices, weights)
    pool = voices[engine]
    voice = pool[int(rng.integers(len(pool)))]
    utt = get_engine(engine).draw(voice, word, rng)
    fx = {
        "speed": round(float(rng.uniform(0.85, 1.15)), 4),  # speed/formant perturbation
        "eq": effects.draw_eq(rng),
        "reverb": effects.draw_reverb(rng),
        "level": effects.draw_level(rng),
        "onset": effects.draw_onset(rng),
    }
    return ClipPlan(label, index, word, engine, voice, utt, fx, int(rng.integers(2**63)))


_ENGINES: dict = {}


def _engine(name):
    if name not in _ENGINES:
        _ENGINES[name] = get_engine(name)
    return _ENGINES[name]


def render_clip(plan: ClipPlan) -> tuple[np.ndarray, dict]:
    """The 1.0 s clip for a plan, and facts about it (word seconds, onset)."""
    rng = np.random.default_rng(plan.render_seed)
    raw, rate = _engine(plan.engine).render(plan.voice, plan.word, plan.utt, rng)
    fx = plan.fx
    x = effects.trim(effects.resample_speed(raw, rate, fx["speed"]))
    if len(x) < int(0.05 * SR) or not np.isfinite(x).all():
        raise RuntimeError(f"{plan.engine} made no usable audio for {plan.word.text!r} ({plan.voice.speaker})")
    longest = CLIP_SAMPLES - 2 * MARGIN
    fit = 1.0
    if len(x) > longest:  # rare: a very slow voice; speed up just enough to keep the word whole
        fit = len(x) / longest
        x = effects.resample_speed(x, SR, fit)[:longest]
    x = effects.apply_eq(x, fx["eq"])
    wet = effects.apply_reverb(x, fx["reverb"])
    wet = effects.set_level(wet, fx["level"]["rms_dbfs"])
    clip, start = effects.place(wet[: len(x)], wet, fx["onset"], CLIP_SAMPLES, MARGIN)
    clip += effects.pink_noise(CLIP_SAMPLES, rng) * np.float32(10 ** (fx["level"]["floor_dbfs"] / 20))
    peak = float(np.abs(clip).max())
    if peak > 0.99:
        clip *= 0.99 / peak
    return clip.astype(np.float32), {"word_seconds": len(x) / SR, "start": start / SR, "fit_speed": fit}


def _run_job(job):
    kind = job[0]
    t0 = time.perf_counter()
    if kind == "noise":
        from edgetune.data.synth.noise import write_background_noise

        _, out_dir, seed, engine_names, voices, words = job
        engines = {n: _engine(n) for n in engine_names}
        written = write_background_noise(out_dir, seed, engines, voices, words)
        return ("noise", written, time.perf_counter() - t0)
    _, out_dir, plan = job
    clip, info = render_clip(plan)
    write_audio(Path(out_dir) / plan.relpath, clip, SR)
    return ("clip", plan.engine, time.perf_counter() - t0, info)


def _worker_init():
    # one worker per core: keep every library single-threaded
    os.environ.setdefault("EDGETUNE_SYNTH_THREADS", "1")


def task_labels(task: str, words: list[str] | None = None) -> tuple[list[str], bool]:
    """(target words, whether an `_unknown_` class is made)."""
    if task not in TASKS:
        raise DataError(f"unknown synth task {task!r}; choose one of {', '.join(TASKS)}")
    chosen = list(words) if words is not None else list(TASKS[task])
    if not chosen:
        raise DataError("no words to synthesise")
    bad = [w for w in chosen if not w or not all(c.isalnum() or c in "'-" for c in w)]
    if bad:
        raise DataError(f"words must be plain words (letters, digits, ' or -): {bad}")
    return chosen, task != "all"


def plan_corpus(task: str, clips_per_word: int, seed: int, voices: dict[str, list[Voice]],
                words: list[str] | None = None, weights: dict[str, float] | None = None,
                unknown_clips: int | None = None, near_miss_clips: int = 0) -> list[ClipPlan]:
    targets, with_unknown = task_labels(task, words)
    plans = [plan_clip(seed, w, i, make_word(w), voices, weights)
             for w in targets for i in range(clips_per_word)]
    if with_unknown:
        pool = [w for w in UNKNOWN_WORDS if w not in set(targets) | set(TASKS["commands"]) | set(TASKS["digits"])
                | set(VOWELS)]
        order = np.random.default_rng([seed, _h("unknown-order")]).permutation(len(pool))
        n = clips_per_word if unknown_clips is None else unknown_clips
        plans += [plan_clip(seed, UNKNOWN, i, make_word(pool[order[i % len(pool)]]), voices, weights)
                  for i in range(n)]
    if near_miss_clips:
        near = near_miss_words(targets) if with_unknown else []
        if not near:
            raise DataError(f"no near-miss words for the {task} task's words; drop --near-miss-clips")
        plans += [plan_clip(seed, UNKNOWN, NEAR_MISS_INDEX0 + i, make_word(near[i % len(near)]), voices, weights)
                  for i in range(near_miss_clips)]
    return plans


def _refuse_other_voices(out: Path, now: dict[str, int]) -> None:
    """A build into a folder resumes it only if it draws the same speakers (`now`: voices
    per engine): with others, every clip's name changes and the old clips would stay in the
    folder beside the new."""
    info = out / "corpus.json"
    if not info.is_file():
        return
    before = json.loads(info.read_text()).get("voices")
    if before is not None and before != now:
        raise DataError(f"{out}: built with voices {before}; these options draw {now} "
                        "(engines installed or --clips-per-word changed), so its clips would mix "
                        "two corpora. Choose a new --out, or delete the folder first.")


def near_miss_words(targets: list[str]) -> list[str]:
    """The near misses of the target words that are not targets themselves, in a fixed order."""
    return [w for t in targets for w in NEAR_MISSES.get(t, []) if w not in targets]


def build_corpus(out_dir, task: str = "commands", clips_per_word: int = 300, seed: int = 0,
                 workers: int | None = None, engines=DEFAULT_ENGINES, progress: bool = True, *,
                 words: list[str] | None = None, noise: bool = True,
                 unknown_clips: int | None = None, near_miss_clips: int = 0,
                 soundfont: str | None = None) -> dict:
    """Write (or complete) a synthetic corpus in `out_dir`; returns a summary dict.

    task: commands | digits | vowels | all, or instruments (rendered from `soundfont`,
    default the General MIDI one pretty-midi ships: see instruments.py). `words`
    overrides the task's word list (e.g. for a tiny test corpus). `engines`: the
    engine mix (see `parse_engine_weights`); engines not installed are skipped with a
    warning and the others share their part. `unknown_clips`: size of `_unknown_`
    (default: clips_per_word); `near_miss_clips`: more `_unknown_` clips, of words that sound
    like the targets (NEAR_MISSES). Existing clips are kept, so an interrupted build resumes."""
    if task == "instruments":
        from edgetune.data.synth.instruments import build_instruments

        if unknown_clips is not None or near_miss_clips:
            raise DataError("the instruments task has no `_unknown_` class; drop --unknown-clips "
                            "and --near-miss-clips")
        return build_instruments(out_dir, clips_per_word, seed, workers, soundfont, progress, noise)
    if soundfont is not None:
        raise DataError("a SoundFont renders the instruments task only; use --task instruments")
    t0 = time.perf_counter()
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another --out")
    if clips_per_word < 1:
        raise DataError("clips per word must be at least 1")
    requested = parse_engine_weights(engines)
    names = available_engines(requested)
    if not names:
        raise DataError("no speech engine available; install them with pip install 'edgetune[synth]'")
    total = sum(requested[n] for n in names)
    weights = {n: round(requested[n] / total, 6) for n in names}
    voices = voice_identities(seed, names, voice_counts(clips_per_word))
    plans = plan_corpus(task, clips_per_word, seed, voices, words, weights, unknown_clips, near_miss_clips)
    voice_sizes = {n: len(v) for n, v in voices.items()}
    _refuse_other_voices(out, voice_sizes)
    out.mkdir(parents=True, exist_ok=True)

    todo = [p for p in plans if not (out / p.relpath).exists()]
    for name in sorted({p.engine for p in todo}):
        _engine(name).prepare()
    jobs: list = []
    if noise:
        from edgetune.data.synth.noise import NOISE_FILES

        if any(not (out / "_background_noise_" / f).exists() for f in NOISE_FILES):
            babble_words = TASKS["all"]
            # Kokoro (~1 s a word) would make a minute of babble cost minutes: others talk
            talkers = [n for n in names if n != "kokoro"] or names
            jobs.append(("noise", str(out), seed, talkers, voices, babble_words))
    jobs += [("clip", str(out), p) for p in todo]

    workers = max(1, int(workers or os.cpu_count() or 1))
    workers = min(workers, max(1, len(jobs)))
    per_engine_time = {n: 0.0 for n in names}
    per_engine_clips = {n: 0 for n in names}
    noise_written: list[str] = []
    word_seconds: list[float] = []
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=f"synth {task}", unit="clip", disable=not progress, dynamic_ncols=True)
    pool = None
    try:
        if workers == 1 or len(jobs) <= 1:
            results = map(_run_job, jobs)
        else:
            ctx = multiprocessing.get_context("spawn")  # engines hold native state: never fork it
            pool = ctx.Pool(workers, initializer=_worker_init)
            results = pool.imap_unordered(_run_job, jobs, chunksize=max(1, min(8, len(jobs) // (workers * 8))))
        for res in results:
            if res[0] == "noise":
                noise_written = res[1]
            else:
                per_engine_clips[res[1]] += 1
                per_engine_time[res[1]] += res[2]
                word_seconds.append(res[3]["word_seconds"])
            bar.update(1)
        if pool is not None:
            pool.close()
            pool.join()
    except BaseException:
        if pool is not None:
            pool.terminate()
        raise
    finally:
        bar.close()

    # manifest and summary, from the plans (so a resumed build lists every clip)
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(["path", "label", "speaker", "engine", "word", "params"])
    counts: dict[str, int] = {}
    engine_counts = {n: 0 for n in names}
    speakers = set()
    for p in plans:
        wr.writerow([p.relpath, p.label, p.voice.speaker, p.engine, p.word.text,
                     json.dumps(p.params(), sort_keys=True, separators=(",", ":"))])
        counts[p.label] = counts.get(p.label, 0) + 1
        engine_counts[p.engine] += 1
        speakers.add(p.voice.speaker)
    write_text_atomic(out / "corpus.csv", buf.getvalue())
    targets, with_unknown = task_labels(task, words)
    noise_files = sorted(f.name for f in (out / "_background_noise_").glob("*.wav")) if noise else []
    info = {
        "format": "edgetune.synth/1",
        "task": task,
        "seed": seed,
        "words": targets,
        "labels": targets + ([UNKNOWN] if with_unknown else []),
        "unknown_words": sorted({p.word.text for p in plans if p.label == UNKNOWN}),
        # Models for words remove each band's mean (edgetune/nets/inputs.py); a held vowel
        # fills the window, so its bands' means are the vowel and models keep them.
        "cmn": task != "vowels",
        "clips_per_word": clips_per_word,
        "near_miss_clips": near_miss_clips,
        "counts": counts,
        "n_clips": len(plans),
        "engines": names,
        "engine_weights": weights,
        "engine_clips": engine_counts,
        "voices": voice_sizes,
        "speakers_used": len(speakers),
        "background_noise": noise_files,
        "recipe": {
            "sample_rate": SR, "clip_seconds": CLIP_SAMPLES / SR,
            "espeak": "8 English voices x 85 variants; per identity pitch 15-85, range 20-90, rate 80-165 wpm; "
                      "per utterance pitch +-6, range +-10, rate x0.9-1.1; vowels spoken in de/fi/cs/es/it",
            "piper": "en_US-joe-medium; pseudo-speakers by formant warp 0.84-1.20 (duration kept), "
                     "length_scale 1.3-2.0 (x1.5 for vowels), noise_scale 0.4-0.9, noise_w 0.4-1.1; per utterance jitter",
            "flite": "kal (8 kHz), kal16, awb, rms, slt; per identity f0_shift 0.85-1.20, duration_stretch 1.0-1.6, "
                     "formant warp 0.88-1.12 (duration kept); per utterance f0 x0.95-1.05, duration x0.9-1.1; "
                     "not for plain vowels",
            "kokoro": "Kokoro-82M int8 fed eSpeak IPA (misaki alphabet); per identity a Dirichlet(0.5) blend of "
                      "its 5 styles, speed 0.85-1.15, formant warp 0.80-1.10 (duration kept); per utterance "
                      "blend jitter (lognormal 0.2), speed x0.92-1.08 (/1.5 for vowels)",
            "mbrola": "MBROLA diphone databases read by eSpeak NG (2 in 5 identities native us1-us3/en1); per "
                      "identity pitch 20-80, 110-170 wpm, formant warp 0.9-1.1; per utterance pitch +-6, "
                      "rate x0.9-1.1, MBROLA pitch x0.95-1.05; not for plain vowels",
            "rhvoice": "RHVoice alan, bdl, clb, evgeniy-eng, lyubov, slt; per identity pitch 80-125%, rate "
                       "70-115%, formant warp 0.9-1.1 (duration kept); per utterance pitch x0.95-1.05, rate "
                       "x0.9-1.1; not for plain vowels",
            "pico": "SVOX Pico en-US, en-GB; per identity pitch 75-125%, rate 70-110%, formant warp 0.80-1.08 "
                    "(duration kept); per utterance pitch x0.95-1.05, rate x0.9-1.1; not for plain vowels",
            "effects": f"speed/formant 0.85-1.15 (resample); trim -{effects.WORD_TRIM_DB:g} dB; EQ (1/6 telephone 8 kHz); "
                       "reverb p=0.5 rt60 0.1-0.6 s; RMS -34..-14 dBFS; onset beta(1.6,1.6) with 20 ms margins; "
                       "pink floor -78..-58 dBFS; no time-stretch",
        },
    }
    write_text_atomic(out / "corpus.json", json.dumps(info, indent=2) + "\n")
    elapsed = time.perf_counter() - t0
    rendered = sum(per_engine_clips.values())
    summary = dict(info)
    summary.update({
        "out_dir": str(out),
        "clips": len(plans),
        "speakers": len(speakers),
        "written": rendered,
        "skipped": len(plans) - len(todo),
        "noise_written": noise_written,
        "seconds": round(elapsed, 3),
        "clips_per_second": round(rendered / elapsed, 2) if elapsed > 0 and rendered else 0.0,
        "engine_cpu_seconds": {n: round(t, 3) for n, t in per_engine_time.items()},
        "engine_rendered": per_engine_clips,
        "word_seconds_median": round(float(np.median(word_seconds)), 3) if word_seconds else None,
        "workers": workers,
    })
    return summary
