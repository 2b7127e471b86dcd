"""The instruments task: SoundFont rendering, note plans, the corpus layout and the
music front end (through a checkpoint and an ONNX file's metadata)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from edgetune.errors import DataError
from edgetune.frontend import FrontEnd

pytest.importorskip("tinysoundfont", reason="renderer not installed (pip install 'edgetune[synth]')")

from edgetune.data.synth.instruments import FAMILIES, plan_note
from edgetune.data.synth.soundfont import Note, SoundFont, default_soundfont

if default_soundfont() is None:
    pytest.skip("no General MIDI SoundFont (pretty-midi's TimGM6mb.sf2)", allow_module_level=True)


@pytest.fixture(scope="module")
def soundfont() -> SoundFont:
    return SoundFont(default_soundfont())


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    from edgetune.data.synth.corpus import build_corpus

    out = tmp_path_factory.mktemp("instruments")
    build_corpus(out, "instruments", clips_per_word=2, workers=1, progress=False, noise=False)
    return out


def test_render_note_is_sound_and_repeatable(soundfont):
    note = [Note(0.05, 0.3, 60, 100)]
    a = soundfont.render(0, note, 0.5)
    soundfont.render(40, [Note(0.0, 0.5, 48, 127)], 0.5)  # another program in between
    b = soundfont.render(0, note, 0.5)
    assert a.dtype == np.float32 and len(a) == 8000
    assert np.abs(a[:700]).max() < 1e-4 < np.abs(a[800:]).max()  # silent until the key is pressed
    assert np.array_equal(a, b)


def test_plans_are_deterministic_and_in_range():
    assert plan_note(0, "bass", 7) == plan_note(0, "bass", 7)
    assert plan_note(0, "bass", 7) != plan_note(1, "bass", 7)
    for label, programs in FAMILIES.items():
        for i in range(20):
            p = plan_note(0, label, i)
            assert p.program in programs and p.kind in ("note", "chord", "phrase")
            assert all(0 <= n.key <= 127 and 20 <= n.velocity <= 127 for n in p.notes)
            assert max(n.start + n.seconds for n in p.notes) < 1.0
            assert re.fullmatch(rf"{label}/p\d{{3}}k\d{{3}}_nohash_{i}\.wav", p.relpath)
    with pytest.raises(DataError):
        plan_note(0, "kazoo", 0)


def test_corpus_has_the_families_and_asks_for_the_music_front_end(tiny_corpus):
    from edgetune.data.dataset import dataset_frontend, load_dataset

    assert len(FAMILIES) >= 8
    info = json.loads((tiny_corpus / "corpus.json").read_text())
    assert info["labels"] == list(FAMILIES) and info["task"] == "instruments"
    ds = load_dataset(tiny_corpus)
    assert ds.labels == sorted(FAMILIES)
    assert all(re.fullmatch(r"p\d{3}k\d{3}", e.speaker) for e in ds.examples)
    assert dataset_frontend(tiny_corpus) == FrontEnd.preset("music")


def test_soundfont_option_errors(tmp_path):
    from edgetune.data.synth.corpus import build_corpus

    (tmp_path / "bad.sf2").write_bytes(b"not a SoundFont")
    with pytest.raises(DataError, match="not a readable SoundFont"):
        build_corpus(tmp_path / "c", "instruments", 1, soundfont=str(tmp_path / "bad.sf2"), progress=False)

    with pytest.raises(DataError, match="no such SoundFont"):
        build_corpus(tmp_path / "a", "instruments", 1, soundfont=str(tmp_path / "none.sf2"), progress=False)
    with pytest.raises(DataError, match="instruments task only"):
        build_corpus(tmp_path / "b", "digits", 1, soundfont=str(tmp_path / "none.sf2"), progress=False)


def test_music_front_end_round_trips():
    fe = FrontEnd.preset("music")
    assert fe != FrontEnd() and FrontEnd.preset("speech") == FrontEnd()
    assert FrontEnd.from_dict(json.loads(json.dumps(fe.to_dict()))) == fe
    assert fe._filterbank.sum(axis=0).min() > 0  # no empty mel band at the low end
    with pytest.raises(ValueError):
        FrontEnd.preset("opera")


def test_music_front_end_in_checkpoint_and_onnx(tmp_path):
    pytest.importorskip("torch")
    from test_runtime import make_model

    from edgetune.nets import create_model
    from edgetune.runtime.model import load_model
    from edgetune.train.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint

    fe = FrontEnd.preset("music")
    labels = ["_silence_", "piano", "bass"]
    net = create_model("dscnn-s", n_classes=3, n_frames=fe.n_frames, n_mels=fe.n_mels)
    save_checkpoint(make_checkpoint(net, labels=labels, frontend=fe, stage="finetuned"), tmp_path / "m.pt")
    assert FrontEnd.from_dict(load_checkpoint(tmp_path / "m.pt")["frontend"]) == fe
    rec = load_model(make_model(tmp_path / "m.onnx", labels=labels, fe=fe))
    assert rec.frontend == fe
