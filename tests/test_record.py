"""`edgetune record`: VAD, the Speech Commands folder it writes, resuming, errors, and a
session through the virtual microphone (DESIGN.md, "Virtual microphone")."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf
from test_listen import drive_prompts, prompted_session, tone_wavs, virtual_mic  # noqa: F401
from test_runtime import SR, make_model, noise, run_cli, tone

from edgetune.data.dataset import load_dataset, which_split
from edgetune.runtime.level import clip_around, find_utterance, peak_level_db


def test_levels_and_utterance():
    assert peak_level_db(np.ones(SR, np.float32), SR) == pytest.approx(0.0)
    assert peak_level_db(tone(1000, 1.0, amp=1.0), SR) == pytest.approx(-3.0, abs=0.1)
    assert peak_level_db(np.zeros(100), SR) == -120.0
    x = noise(3.0, level=0.003, seed=1)
    # a word with a short pause inside: one utterance, padded a little either side
    x[int(1.0 * SR) : int(1.3 * SR)] += tone(500, 0.3)
    x[int(1.45 * SR) : int(1.7 * SR)] += tone(500, 0.25)
    x[int(2.6 * SR) : int(2.65 * SR)] += tone(500, 0.05, amp=0.05)  # a faint click later
    u = find_utterance(x, SR)
    assert 0.85 * SR < u.start < 1.0 * SR and 1.7 * SR < u.end < 1.85 * SR
    assert u.level_db == pytest.approx(-13.5, abs=1) and u.floor_db < -45 and not u.clipped
    clip = clip_around(x, u, SR)
    assert len(clip) == SR and np.abs(clip).max() > 0.25  # the word is inside the one second
    assert find_utterance(noise(2.0, level=0.003), SR) is None  # the room alone
    assert find_utterance(tone(500, 1.0, amp=0.0005), SR) is None  # under -55 dBFS
    short = x[int(1.0 * SR) : int(1.5 * SR)]  # a capture shorter than a clip is zero-padded
    padded = clip_around(short, find_utterance(short, SR), SR)
    assert len(padded) == SR and not padded[: SR // 5].any() and not padded[-SR // 5 :].any()


def _session(path, labels, background=1.0, **kw):
    sf.write(path, prompted_session(labels, lead=background, **kw), SR, subtype="PCM_16")
    return path


def _record(out, session, *extra):
    return run_cli(
        ["record", "--labels", "low,high", "--count", "2", "--out", out, "--speaker", "alice",
         "--file", session, "--background", "1", "--countdown", "0", "--yes", *extra]
    )  # fmt: skip


def test_record_from_file_and_resume(tmp_path):
    out = tmp_path / "my_voice"
    # prompts go round-robin: low high low high
    r = _record(out, _session(tmp_path / "s1.wav", ["low", "high", "low", "high"]), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["counts"] == {"low": 2, "high": 2} and res["ended"] == "done"
    assert [w["label"] for w in res["written"]] == ["low", "high", "low", "high"]
    assert all(0.4 < w["seconds"] < 0.9 and w["level_db"] > -20 for w in res["written"])
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav"))
    assert files == [
        "_background_noise_/alice_room_0.wav",
        "high/alice_nohash_0.wav",
        "high/alice_nohash_1.wav",
        "low/alice_nohash_0.wav",
        "low/alice_nohash_1.wav",
    ]
    for f in files[1:]:
        info = sf.info(out / f)
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (SR, SR, 1, "PCM_16")
    # the tone is centred in its clip
    clip = sf.read(out / "low" / "alice_nohash_0.wav", dtype="float32")[0]
    loud = np.flatnonzero(np.abs(clip) > 0.1)
    assert abs((loud[0] + loud[-1]) / 2 - SR / 2) < 0.05 * SR
    assert sf.info(out / files[0]).frames == SR  # one second of the room

    # a Speech Commands folder: one speaker, one split by the hash rule, silence from the room
    ds = load_dataset(out)
    assert ds.labels == ["_silence_", "high", "low"]
    assert {e.speaker for e in ds.examples if e.label != "_silence_"} == {"alice"}
    assert {e.split for e in ds.examples if e.label != "_silence_"} == {which_split("alice")}

    # resuming tops up to --count: one more each, numbering continues, the room is not re-taken
    before = {f: (out / f).read_bytes() for f in files}
    r = _record(out, _session(tmp_path / "s2.wav", ["low", "high"], background=0), "--count", "3")
    assert r.returncode == 0, r.stderr
    assert "wrote 2 clips" in r.stdout and "now low 3, high 3 of alice" in r.stdout
    assert (out / "low" / "alice_nohash_2.wav").exists() and (
        out / "high" / "alice_nohash_2.wav"
    ).exists()
    assert all((out / f).read_bytes() == b for f, b in before.items())
    assert len(list((out / "_background_noise_").iterdir())) == 1
    r = _record(out, _session(tmp_path / "s3.wav", []))  # all there: nothing to do
    assert r.returncode == 0 and "wrote 0 clips" in r.stdout


def test_record_misses_and_end_of_input(tmp_path):
    out = tmp_path / "v"
    # `high` is never said: three windows of room, then it is skipped; the file then ends
    r = _record(out, _session(tmp_path / "s.wav", ["low", None, None, None, "low"]), "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["missed"] == 3 and res["counts"] == {"low": 2, "high": 0}
    assert "heard nothing 3 times" in r.stderr and "skipping 'high'" in r.stderr
    assert res["ended"] == "input ended"  # the fourth prompt (high) found no audio left


def test_record_user_errors(tmp_path):
    session = _session(tmp_path / "s.wav", ["low"])
    for extra, msg in (
        (["--labels", "_silence_"], "cannot be recorded"),
        (["--labels", "a,a"], "repeat"),
        (["--speaker", "a_nohash_b"], "not usable in file names"),
    ):
        r = run_cli(["record", "--out", tmp_path / "o", "--file", session, "--yes", *
                     (["--labels", "low"] if "--labels" not in extra else []), *extra])  # fmt: skip
        assert r.returncode == 1 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run_cli(
        ["record", "--labels", "low", "--out", tmp_path / "o", "--file", tmp_path / "none.wav"]
    )
    assert r.returncode == 1 and "none.wav" in r.stderr


def test_record_portaudio_missing(tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    env = dict(os.environ, PYTHONPATH=str(fake) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = run_cli(["record", "--labels", "a", "--out", tmp_path / "o"], env=env)
    assert r.returncode == 1 and "apt-get install libportaudio2" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()


def test_record_virtual_microphone(virtual_mic, tone_wavs, tmp_path):  # noqa: F811
    """Prompted words played into the virtual microphone land, trimmed, in the right folders,
    and the recogniser hears each clip as the word it was recorded for."""
    from edgetune.runtime.model import load_model

    out = tmp_path / "mic_voice"
    code, stdout, err, prompted = drive_prompts(
        ["record", "--labels", "low,high", "--count", "2", "--out", out, "--speaker", "vm",
         "--countdown", "0", "--window", "2.5", "--background", "1", "--yes", "--json"],
        virtual_mic,
        tone_wavs,
    )  # fmt: skip
    assert code == 0, err
    assert prompted == ["low", "high", "low", "high"]
    res = json.loads(stdout.strip().splitlines()[-1])
    assert res["counts"] == {"low": 2, "high": 2} and "microphone" in res["source"], res
    assert (out / "_background_noise_" / "vm_room_0.wav").exists()
    rec = load_model(make_model(tmp_path / "tones.onnx"))
    for lab in ("low", "high"):
        clips = [sf.read(p, dtype="float32")[0] for p in sorted((out / lab).glob("*.wav"))]
        assert all(len(c) == SR for c in clips)
        assert [rec.labels[i] for i in rec.predict_clips(clips).argmax(axis=1)] == [lab, lab]


def test_record_stdin_pcm(tmp_path):
    audio = prompted_session(["low", "high"], lead=0.0)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    out = tmp_path / "v"
    r = run_cli(["record", "-", "--labels", "low,high", "--count", "1", "--out", out,
                 "--background", "0", "--countdown", "0", "--json"], input=pcm)  # fmt: skip
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert res["counts"] == {"low": 1, "high": 1} and res["source"] == "stdin at 16000 Hz"
    assert not (out / "_background_noise_").exists()


def test_retake_and_quit(tmp_path):
    """The keys, through the session's UI: a retake records the prompt again, quit stops and
    keeps what was written."""
    from edgetune.runtime.record import FileCapture, SessionUI, record_session

    class Keys(SessionUI):
        def __init__(self, keys):
            self.keys, self.prompts = list(keys), []

        def prompt(self, label, index, total):
            self.prompts.append(label)

        def decide(self, take):
            return self.keys.pop(0)

    session = _session(tmp_path / "s.wav", ["low", "low", "high", "low"], background=0)
    ui = Keys(["retake", "keep", "keep", "quit"])
    r = record_session(FileCapture(session), tmp_path / "v", ["low", "high"], 2, "kim", ui=ui,
                       countdown=0, background_seconds=0)  # fmt: skip
    assert ui.prompts == ["low", "low", "high", "low"] and r.ended == "quit"
    assert r.counts == {"low": 1, "high": 1} and len(r.written) == 2
    assert sorted(p.name for p in (tmp_path / "v" / "low").iterdir()) == ["kim_nohash_0.wav"]
