"""The built-in synthetic corpus: engines, effects, and build_corpus (layout,
determinism, resume, speaker ids stable across tasks). Skips when the synth
wheels are missing."""

from __future__ import annotations

import csv
import importlib.util
import json
import re

import numpy as np
import pytest
import soundfile as sf

from edgetune.data.synth import corpus as C
from edgetune.data.synth import effects, engines
from edgetune.data.synth.engines import VOWEL_LANGS, Word, engine_available, get_engine

HAVE_ESPEAK = engine_available("espeak")
HAVE_PIPER = engine_available("piper")
needs_espeak = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeakng-loader not installed (edgetune[synth])")
ENGINES = [e for e in ("espeak", "piper") if engine_available(e)]
# Piper clips are bit-reproducible only when `onnx` can rewrite its noise nodes
if importlib.util.find_spec("onnx") is None and "piper" in ENGINES:
    ENGINES.remove("piper")
SPEAKER_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")


@pytest.mark.parametrize("name", ["espeak", "piper"])
def test_engine_says_a_word(name):
    if not engine_available(name):
        pytest.skip(f"{name} wheels not installed (edgetune[synth])")
    eng = get_engine(name)
    voices = eng.voices(np.random.default_rng(0), 8)
    assert len({v.speaker for v in voices}) == 8
    for v in voices:
        assert SPEAKER_RE.match(v.speaker) and "_nohash_" not in v.speaker
    for v in voices[:3]:
        audio, rate = eng.say(v, "seven", np.random.default_rng(1))
        assert audio.dtype == np.float32 and 16000 <= rate <= 30000
        x = effects.trim(effects.resample_speed(audio, rate))
        assert 0.2 <= len(x) / 16000 <= 1.6
        assert np.sqrt(np.mean(x**2)) > 1e-3


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


def test_missing_engine_is_skipped_with_one_warning(monkeypatch, capsys):
    monkeypatch.setitem(engines._REQUIRES, "piper", ("edgetune_no_such_module_xyz",))
    monkeypatch.setattr(engines, "_warned", set())
    assert engines.available_engines(["piper"]) == []
    assert engines.available_engines(["piper"]) == []
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: synth engine 'piper' skipped")


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
