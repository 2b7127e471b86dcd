"""The built-in synthetic corpus: engines, effects, the engine mix, and build_corpus
(layout, determinism, resume, speaker ids stable across tasks). Skips what needs
a synth wheel (or the flite, mbrola, RHVoice or Pico program) that is missing."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import threading

import numpy as np
import pytest
import soundfile as sf

from edgetune.data.synth import corpus as C
from edgetune.data.synth import effects, engines
from edgetune.data.synth.engines import (
    VOWEL_LANGS,
    Word,
    engine_available,
    get_engine,
    missing_requirements,
    parse_engine_weights,
)
from edgetune.errors import DataError

HAVE_ESPEAK = engine_available("espeak")
HAVE_PIPER = engine_available("piper")
needs_espeak = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeakng-loader not installed (edgetune[synth])")
ALL_ENGINES = ("espeak", "piper", "flite", "kokoro", "mbrola", "rhvoice", "pico")
ENGINES = [e for e in ALL_ENGINES if engine_available(e)]
# Piper clips are bit-reproducible only when `onnx` can rewrite its noise nodes
if importlib.util.find_spec("onnx") is None and "piper" in ENGINES:
    ENGINES.remove("piper")
SPEAKER_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")


@pytest.mark.parametrize("name", ALL_ENGINES)
def test_engine_says_a_word(name):
    if not engine_available(name):
        pytest.skip(f"{name} engine not installed: {', '.join(missing_requirements(name))}")
    eng = get_engine(name)
    voices = eng.voices(np.random.default_rng(0), 8)
    assert len({v.speaker for v in voices}) == 8
    for v in voices:
        assert SPEAKER_RE.match(v.speaker) and "_nohash_" not in v.speaker
    for v in voices[:3]:
        audio, rate = eng.say(v, "seven", np.random.default_rng(1))
        assert audio.dtype == np.float32 and 6000 <= rate <= 30000  # Flite's kal is 8 kHz
        x = effects.trim(effects.resample_speed(audio, rate))  # -> 16 kHz
        assert 0.2 <= len(x) / 16000 <= 1.6
        assert np.sqrt(np.mean(x**2)) > 1e-3
    again, _ = eng.say(voices[2], "seven", np.random.default_rng(1))  # the same seed, the same sound
    np.testing.assert_array_equal(again, audio)


def test_kokoro_reads_misaki_ipa():
    from edgetune.data.synth.kokoro import english_ipa

    assert english_ipa("nˈaɪn") == "nˈIn" and english_ipa("ɡˈoʊ") == "ɡˈO" and english_ipa("fˈɔːɹ") == "fˈɔɹ"


@needs_espeak
def test_vowels_are_plain_vowels():
    from edgetune.data.synth.espeak import Espeak

    es = Espeak.get()
    for lang in VOWEL_LANGS:
        for v in "aeiou":
            ipa = es.phonemize(v, lang).replace("ˈ", "").replace("ː", "")
            assert len(ipa) == 1, (lang, v, ipa)  # a monophthong, not a letter name like "eɪ"
    eng = get_engine("espeak")
    voice = eng.voices(np.random.default_rng(0), 1)[0]
    audio, rate = eng.say(voice, Word("a", "a", VOWEL_LANGS), np.random.default_rng(0))
    assert len(effects.trim(effects.resample_speed(audio, rate))) > 0.15 * 16000


def test_trim_keeps_weak_consonants():
    """A closing consonant 40 dB under the vowel (the /f/ of "off") is part of the word."""
    rng = np.random.default_rng(0)
    vowel = np.sin(2 * np.pi * 200 * np.arange(4000) / 16000).astype(np.float32) * 0.5
    fricative = rng.standard_normal(1600).astype(np.float32) * 0.5 * 10 ** (-40 / 20)
    silence = np.zeros(2000, np.float32)
    t = effects.trim(np.concatenate([silence, vowel, fricative, silence]))
    assert len(vowel) + len(fricative) <= len(t) <= len(vowel) + len(fricative) + 2 * 160 + 320


def test_effects_keep_the_word_whole():
    rng = np.random.default_rng(0)
    word = np.zeros(16000 // 2, np.float32)
    word[400:-400] = rng.standard_normal(16000 // 2 - 800).astype(np.float32) * 0.1
    t = effects.trim(np.concatenate([np.zeros(3000, np.float32), word, np.zeros(3000, np.float32)]))
    assert abs(len(t) - (len(word) - 800)) <= 2 * 160 + 320
    for onset in (0.0, 0.5, 1.0):
        wet = effects.apply_reverb(t, {"rt60": 0.5, "wet": 0.4, "predelay_ms": 5, "damping_hz": 4000, "seed": 1})
        clip, start = effects.place(wet[: len(t)], wet, onset)
        assert len(clip) == 16000 and start >= 0 and start + len(t) <= 16000
        np.testing.assert_array_equal(clip[start : start + len(t)], wet[: len(t)])
    eq = effects.apply_eq(t, effects.draw_eq(rng))
    assert eq.shape == t.shape and np.isfinite(eq).all()


def test_voice_ids_depend_on_seed_not_task():
    if not ENGINES:
        pytest.skip("no synth engine installed")
    v0 = C.voice_identities(0, ENGINES)
    assert C.voice_identities(0, ENGINES) == v0
    assert sum(len(v) for v in v0.values()) >= 60 or len(ENGINES) == 1
    ids = [v.speaker for vs in v0.values() for v in vs]
    assert len(set(ids)) == len(ids)
    # the same (seed, label, index) clip is the same speaker in every task
    a = {p.relpath for p in C.plan_corpus("commands", 4, 0, v0) if p.label == "yes"}
    b = {p.relpath for p in C.plan_corpus("all", 4, 0, v0) if p.label == "yes"}
    assert a == b
    assert C.voice_identities(1, ENGINES) != v0


def test_a_larger_corpus_draws_more_speakers_not_more_takes():
    assert C.voice_counts(1) == C.voice_counts(C.CLIPS_PER_VOICE_SET) == C.N_VOICES
    double = C.voice_counts(2 * C.CLIPS_PER_VOICE_SET)
    assert double == {name: 2 * n for name, n in C.N_VOICES.items()}
    if not ENGINES:
        pytest.skip("no synth engine installed")
    small, large = C.voice_identities(0, ENGINES), C.voice_identities(0, ENGINES, double)
    for name in ENGINES:  # the larger set keeps the smaller one's speakers, then adds others
        assert large[name][: len(small[name])] == small[name]
        assert len({v.speaker for v in large[name]}) == len(large[name]) == 2 * len(small[name])


def test_unknown_pool_excludes_targets():
    voices = {"espeak": get_engine("espeak").voices(np.random.default_rng(0), 5)}
    for task, targets in (("commands", C.COMMANDS), ("digits", C.DIGITS), ("vowels", C.VOWELS)):
        plans = C.plan_corpus(task, 50, 0, voices)
        unknown = [p for p in plans if p.label == C.UNKNOWN]
        assert len(unknown) == 50
        words = {p.word.text for p in unknown}
        assert not words & set(targets) and len(words) >= 30
    labels = {p.label for p in C.plan_corpus("all", 1, 0, voices)}
    assert C.UNKNOWN not in labels and set(C.UNKNOWN_WORDS) <= labels and set(C.VOWELS) <= labels


def test_more_unknown_clips_extend_the_corpus_in_place():
    # --unknown-clips on an existing corpus adds `_unknown_` clips and keeps every one there
    voices = {"espeak": get_engine("espeak").voices(np.random.default_rng(0), 5)}
    small, big = (C.plan_corpus("commands", 4, 0, voices, unknown_clips=n) for n in (4, 12))
    assert sum(p.label == C.UNKNOWN for p in big) == 12
    assert {p.relpath for p in small} < {p.relpath for p in big}


def test_near_miss_clips_add_sound_alike_words_and_keep_the_rest():
    voices = {"espeak": get_engine("espeak").voices(np.random.default_rng(0), 5)}
    plain = C.plan_corpus("digits", 4, 0, voices, unknown_clips=8)
    near = C.plan_corpus("digits", 4, 0, voices, unknown_clips=8, near_miss_clips=25)
    before = {q.relpath for q in plain}
    added = [p for p in near if p.relpath not in before]
    assert len(near) == len(plain) + 25 and len(added) == 25
    assert [p.relpath for p in near[: len(plain)]] == [p.relpath for p in plain]
    assert {p.label for p in added} == {C.UNKNOWN}
    words = {p.word.text for p in added}
    assert words == set(C.near_miss_words(C.DIGITS)) and {"free", "floor"} <= words
    assert not words & set(C.DIGITS)
    with pytest.raises(DataError, match="near-miss"):
        C.plan_corpus("vowels", 2, 0, voices, near_miss_clips=3)


def test_unknown_clips_refused_for_instruments(tmp_path):
    from click.testing import CliRunner

    from edgetune.cli import cli

    out = CliRunner().invoke(cli, ["data", "synth", "--task", "instruments", "--unknown-clips", "5",
                                    "--out", str(tmp_path / "x")])
    assert out.exit_code == 1 and "no `_unknown_` class" in out.output


def test_missing_engine_is_skipped_with_one_warning(monkeypatch, capsys):
    monkeypatch.setitem(engines._MODULES, "piper", ("edgetune_no_such_module_xyz",))
    monkeypatch.setitem(engines._PROGRAMS, "flite", ("edgetune-no-such-program",))
    monkeypatch.setattr(engines, "_warned", set())
    assert engines.available_engines(["piper", "flite"]) == []
    assert engines.available_engines(["piper", "flite"]) == []
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("warning: synth engine 'piper' skipped")
    assert err[1].startswith("warning: synth engine 'flite' skipped") and "apt-get install flite" in err[1]


@needs_espeak
def test_corpus_skips_a_missing_engine(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(engines._PROGRAMS, "flite", ("edgetune-no-such-program",))
    monkeypatch.setattr(engines, "_warned", set())
    s = C.build_corpus(tmp_path, "commands", clips_per_word=2, seed=0, workers=1, engines="espeak=1,flite=3",
                       progress=False, words=["yes"], noise=False)
    assert s["engines"] == ["espeak"] and s["engine_weights"] == {"espeak": 1.0} and s["written"] == 4
    assert "synth engine 'flite' skipped" in capsys.readouterr().err


def test_engine_weights_parse():
    assert parse_engine_weights("espeak,piper") == {"espeak": 1.0, "piper": 1.0}
    assert parse_engine_weights(["espeak", "flite"]) == {"espeak": 1.0, "flite": 1.0}
    assert parse_engine_weights(" espeak=0.35, piper=0.35,flite=0.15,kokoro=0.15 ") == {
        "espeak": 0.35, "piper": 0.35, "flite": 0.15, "kokoro": 0.15}
    assert parse_engine_weights("espeak=2,piper=0") == {"espeak": 2.0}
    assert parse_engine_weights({"piper": 1}) == {"piper": 1.0}
    for bad, why in (("espeak=0.5,piper", "to every engine or to none"), ("espeak=x", "not a number"),
                     ("festival", "unknown synth engine"), ("espeak=-1", ">= 0"), ("espeak=0", "above 0"),
                     ("espeak,espeak", "twice"), ("", "above 0")):
        with pytest.raises(DataError, match=why):
            parse_engine_weights(bad)


def _fake_voices():
    """Identities for every engine, none loaded (planning only draws, never renders)."""
    return C.voice_identities(0, ALL_ENGINES, counts={n: 6 for n in C.N_VOICES})


def test_engine_mix_plans_are_deterministic():
    voices = _fake_voices()
    mix = {"espeak": 0.35, "piper": 0.35, "flite": 0.15, "kokoro": 0.15}
    plans = C.plan_corpus("digits", 200, 0, voices, weights=mix)
    again = C.plan_corpus("digits", 200, 0, voices, weights=dict(reversed(mix.items())))
    assert [(p.relpath, p.utt, p.fx, p.render_seed) for p in plans] == \
        [(p.relpath, p.utt, p.fx, p.render_seed) for p in again]
    # a clip's plan depends on (seed, label, index) alone, not on the corpus it is in
    one = C.plan_clip(0, "seven", 17, C.make_word("seven"), voices, mix)
    assert one.relpath in {p.relpath for p in plans}
    shares = {n: np.mean([p.engine == n for p in plans]) for n in mix}
    for n, w in mix.items():
        assert abs(shares[n] - w) < 0.05, shares
    # with espeak and piper alone, the old `piper_fraction` rule: piper when u < fraction
    two = C.plan_corpus("digits", 50, 0, voices, weights={"espeak": 0.7, "piper": 0.3})
    for p in two:
        u = np.random.default_rng([0, C._h("clip:" + p.label), p.index]).random()
        assert p.engine == ("piper" if u < 0.3 else "espeak")


@pytest.mark.parametrize("english_only", ["flite", "mbrola", "rhvoice", "pico"])
def test_english_only_engines_never_say_a_plain_vowel(english_only):
    voices = _fake_voices()
    if not voices[english_only]:
        pytest.skip(f"{english_only}: no voice installed")
    plans = C.plan_corpus("vowels", 40, 0, voices, weights={english_only: 0.9, "espeak": 0.1})
    assert {p.engine for p in plans if p.label in C.VOWELS} == {"espeak"}
    with pytest.raises(DataError, match="can say"):
        C.plan_corpus("vowels", 2, 0, {english_only: voices[english_only]})


def test_mbrola_without_voices_is_skipped_with_one_line(monkeypatch, tmp_path, capsys):
    from edgetune.data.synth import mbrola

    monkeypatch.setattr(mbrola, "VOICE_DIR", tmp_path)  # programs may be there, databases are not
    monkeypatch.setattr(engines, "_warned", set())
    assert engines.available_engines(["mbrola"]) == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: synth engine 'mbrola' skipped")
    assert get_engine("mbrola").voices(np.random.default_rng(0), 4) == []


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    if not ENGINES:
        pytest.skip("no synth engine installed")
    out = tmp_path_factory.mktemp("corpus_a")
    summary = C.build_corpus(out, "commands", clips_per_word=3, seed=0, workers=1, engines=ENGINES,
                             progress=False, words=["yes"])
    return out, summary


def _wavs(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.wav") if "_background_noise_" not in p.parts)


def test_layout(tiny):
    out, summary = tiny
    assert summary["written"] == 6 and summary["skipped"] == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["_background_noise_", "_unknown_", "yes"]
    noise = sorted(p.name for p in (out / "_background_noise_").glob("*.wav"))
    assert {"white_noise.wav", "pink_noise.wav", "brown_noise.wav", "hum_50hz.wav", "babble.wav"} <= set(noise)
    for name in noise:
        info = sf.info(out / "_background_noise_" / name)
        assert info.samplerate == 16000 and info.channels == 1 and 30 <= info.duration <= 60
    with open(out / "corpus.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and sorted(r["path"] for r in rows) == _wavs(out)
    for r in rows:
        info = sf.info(out / r["path"])
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 16000, "PCM_16")
        name = r["path"].split("/")[1]
        assert name.startswith(r["speaker"] + "_nohash_") and SPEAKER_RE.match(r["speaker"])
        assert r["engine"] in ENGINES and r["speaker"].startswith(r["engine"] + "-")
        x, _ = sf.read(out / r["path"], dtype="float32")
        assert np.sqrt(np.mean(x**2)) > 1e-3
        json.loads(r["params"])
    meta = json.loads((out / "corpus.json").read_text())
    assert meta["task"] == "commands" and meta["labels"] == ["yes", "_unknown_"]
    assert meta["counts"] == {"yes": 3, "_unknown_": 3}
    assert meta["cmn"] is True  # words: models remove band means (vowels: False)


def test_deterministic_across_workers(tiny, tmp_path):
    out, _ = tiny
    C.build_corpus(tmp_path, "commands", clips_per_word=3, seed=0, workers=2, engines=ENGINES,
                   progress=False, words=["yes"], noise=False)
    assert _wavs(tmp_path) == _wavs(out)
    for rel in _wavs(out):
        assert (tmp_path / rel).read_bytes() == (out / rel).read_bytes(), rel
    assert (tmp_path / "corpus.csv").read_text() == (out / "corpus.csv").read_text()


def test_resume_writes_nothing_new(tiny):
    out, _ = tiny
    before = {rel: (out / rel).stat().st_mtime_ns for rel in _wavs(out)}
    again = C.build_corpus(out, "commands", clips_per_word=3, seed=0, workers=1, engines=ENGINES,
                           progress=False, words=["yes"])
    assert again["written"] == 0 and again["skipped"] == 6 and again["noise_written"] == []
    assert {rel: (out / rel).stat().st_mtime_ns for rel in _wavs(out)} == before
    # an interrupted build: a missing clip is made again, identical
    victim = _wavs(out)[0]
    data = (out / victim).read_bytes()
    (out / victim).unlink()
    third = C.build_corpus(out, "commands", clips_per_word=3, seed=0, workers=1, engines=ENGINES,
                           progress=False, words=["yes"])
    assert third["written"] == 1 and (out / victim).read_bytes() == data


def test_a_build_with_other_speakers_refuses_the_folder(tiny):
    out, _ = tiny
    before = _wavs(out)
    # more clips a word than one voice set: more speakers, so every clip's name would change
    with pytest.raises(DataError, match="would mix two corpora"):
        C.build_corpus(out, "commands", clips_per_word=C.CLIPS_PER_VOICE_SET + 1, seed=0, workers=1,
                       engines=ENGINES, progress=False, words=["yes"])
    assert _wavs(out) == before


def test_per_process_handles_may_fetch_each_other():
    # Piper's and Kokoro's handles fetch eSpeak's inside their constructors; a lock shared
    # by all handle classes deadlocked there (and hung CI), so run it on a thread with a limit.
    from edgetune.data.synth.process import PerProcess

    class Inner(PerProcess):
        pass

    class Outer(PerProcess):
        def __init__(self):
            self.inner = Inner.get()

    got = []
    worker = threading.Thread(target=lambda: got.append(Outer.get()), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert got and got[0].inner is Inner.get() and Outer.get() is got[0]
