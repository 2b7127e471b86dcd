"""Audio loading, dataset layout and splits, and `data check` on broken files."""

import json
import os

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import tone_clip

from edgetune.audio import load_audio, write_audio
from edgetune.cli import cli
from edgetune.data.dataset import SILENCE, ClipLoader, load_dataset, which_split
from edgetune.errors import AudioError, DataError
from edgetune.frontend import FrontEnd

RATE = 16000


def _tone(rate=RATE, seconds=0.5, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.fixture()
def broken(tmp_path):
    d = tmp_path / "broken" / "word"
    d.mkdir(parents=True)
    sf.write(d / "a_nohash_ok.wav", _tone(), RATE, subtype="PCM_16")
    sf.write(d / "a_nohash_u8.wav", _tone(), RATE, subtype="PCM_U8")
    sf.write(d / "a_nohash_24.wav", _tone(), RATE, subtype="PCM_24")
    sf.write(d / "a_nohash_stereo.wav", _tone(channels=2), RATE)
    sf.write(d / "a_nohash_44k.wav", _tone(rate=44100), 44100)
    sf.write(d / "a_nohash_flac.flac", _tone(), RATE)
    nan = _tone().astype(np.float32)
    nan[100] = np.nan
    sf.write(d / "b_nohash_nan.wav", nan, RATE, subtype="FLOAT")
    (d / "b_nohash_empty.wav").write_bytes(b"")
    sf.write(d / "b_nohash_zero.wav", np.zeros(0), RATE)
    (d / "b_nohash_text.wav").write_text("this is not audio\n")
    sf.write(d / "b_nohash_full.wav", _tone(seconds=1.0), RATE)
    raw = (d / "b_nohash_full.wav").read_bytes()
    (d / "b_nohash_trunc.wav").write_bytes(raw[: len(raw) // 2])
    (d / "b_nohash_full.wav").unlink()
    sf.write(d / "b_nohash_long.wav", np.zeros(RATE * 600, np.int16), RATE, subtype="PCM_16")
    return tmp_path / "broken"


def snapshot(root):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_loads_any_width_rate_and_channel_count(broken):
    d = broken / "word"
    for name in ("ok", "u8", "24", "stereo", "44k"):
        x = load_audio(d / f"a_nohash_{name}.wav")
        assert x.dtype == np.float32 and x.ndim == 1
        assert abs(len(x) - 8000) <= 2, name
        assert 0.2 < np.abs(x).max() < 0.35, name
    assert len(load_audio(d / "a_nohash_flac.flac")) == 8000


@pytest.mark.parametrize("name,words", [("nan", "NaN"), ("empty", "not a readable"),
                                        ("zero", "empty"), ("text", "not a readable"),
                                        ("long", "limit")])
def test_unusable_files_raise_one_error_type_naming_the_file(broken, name, words):
    path = broken / "word" / f"b_nohash_{name}.wav"
    with pytest.raises(AudioError) as e:
        load_audio(path)
    assert str(path) in str(e.value) and words in str(e.value)


def test_write_audio_is_atomic_and_leaves_no_temp(tmp_path):
    write_audio(tmp_path / "x.wav", np.zeros(100, np.float32), RATE)
    assert [p.name for p in tmp_path.iterdir()] == ["x.wav"]


def test_data_check_names_each_problem_and_exits_1(broken):
    before = snapshot(broken)
    result = CliRunner().invoke(cli, ["data", "check", str(broken), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    problems = {os.path.basename(e["path"]): e["problem"] for e in report["errors"]}
    assert set(problems) == {f"b_nohash_{n}.wav" for n in ("nan", "empty", "zero", "text", "trunc", "long")}
    assert "truncated" in problems["b_nohash_trunc.wav"]
    notes = {os.path.basename(n["path"]) for n in report["notes"]}
    assert {"a_nohash_u8.wav", "a_nohash_24.wav", "a_nohash_stereo.wav", "a_nohash_44k.wav"} <= notes
    assert snapshot(broken) == before  # nothing modified


def test_data_check_clean_dataset_exits_0(tone_dataset):
    result = CliRunner().invoke(cli, ["data", "check", str(tone_dataset)])
    assert result.exit_code == 0, result.output
    assert "0 errors" in result.output and "0 speakers leaking" in result.output


def test_hash_rule_keeps_speakers_in_one_split(tone_dataset):
    ds = load_dataset(tone_dataset)
    assert ds.labels == [SILENCE, "high", "low", "mid"]
    for e in ds.examples:
        if e.label != SILENCE:
            assert e.split == which_split(e.speaker)
    assert {e.split for e in ds.examples} == {"train", "val", "test"}


def test_split_lists_override_the_hash_rule(tmp_path):
    rng = np.random.default_rng(0)
    for spk in ("anna", "ben", "carl"):
        write_audio(tmp_path / "yes" / f"{spk}_nohash_0.wav", tone_clip(500, rng), RATE)
    (tmp_path / "validation_list.txt").write_text("yes/ben_nohash_0.wav\n")
    (tmp_path / "testing_list.txt").write_text("yes/carl_nohash_0.wav\n")
    splits = {e.speaker: e.split for e in load_dataset(tmp_path).examples}
    assert splits == {"anna": "train", "ben": "val", "carl": "test"}


def test_csv_manifest_and_unknown_mapping(tmp_path, tone_dataset):
    rows = ["path,label,split"]
    for i, label in enumerate(["low", "mid", "high"]):
        src = next((tone_dataset / label).glob("*.wav"))
        rows.append(f"{src},{label},{['train', 'val', 'test'][i]}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset(tmp_path / "m.csv", labels=["_unknown_", "low"])
    assert [e.label for e in ds.examples] == ["low", "_unknown_", "_unknown_"]
    assert [e.split for e in ds.examples] == ["train", "val", "test"]
    with pytest.raises(DataError, match="not among the model's labels"):
        load_dataset(tmp_path / "m.csv", labels=["low"])


def test_missing_dataset_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["data", "check", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "error:" in result.output and "no such dataset" in result.output
    assert "Traceback" not in result.output


def test_silence_is_cut_from_split_specific_noise(tone_dataset):
    ds = load_dataset(tone_dataset)
    silence = [e for e in ds.examples if e.label == SILENCE]
    assert {e.split for e in silence} == {"train", "val", "test"}
    clips = ClipLoader(FrontEnd()).clips(silence[:5])
    assert clips.shape == (5, 16000) and np.isfinite(clips).all()


def test_which_split_is_tensorflows_rule():
    import hashlib
    import re

    from edgetune.data.dataset import speaker_of

    def tf_which_set(filename, validation_percentage=10, testing_percentage=10):
        # tensorflow/examples/speech_commands/input_data.py, verbatim logic
        base_name = os.path.basename(filename)
        hash_name = re.sub(r"_nohash_.*$", "", base_name)
        hash_name_hashed = hashlib.sha1(hash_name.encode("utf-8")).hexdigest()
        percentage_hash = (int(hash_name_hashed, 16) % ((2**27 - 1) + 1)) * (100.0 / (2**27 - 1))
        if percentage_hash < validation_percentage:
            return "val"
        if percentage_hash < (testing_percentage + validation_percentage):
            return "test"
        return "train"

    names = [f"{hashlib.md5(str(i).encode()).hexdigest()[:8]}_nohash_{i % 3}.wav" for i in range(3000)]
    got = [which_split(speaker_of(n)) for n in names]
    assert got == [tf_which_set(n) for n in names]
    share = {s: got.count(s) / len(got) for s in ("train", "val", "test")}
    assert 0.07 < share["val"] < 0.13 and 0.07 < share["test"] < 0.13
    assert speaker_of("abc_nohash_2.wav") == "abc" and speaker_of("dir/clip7.wav") == "clip7"
