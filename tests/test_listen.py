"""`edgetune listen`: stdin PCM, Ctrl-C summary, PortAudio missing, and a virtual microphone.

The microphone test follows DESIGN.md ("Virtual microphone"): a PulseAudio null sink
whose monitor is the default input; it starts the daemon itself when none runs, and
skips with the reason when PulseAudio or PortAudio is not there.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import soxr
from test_runtime import (
    EVENTS,
    REPO,
    SR,
    TONES,
    load_tool,
    make_model,
    noise,
    run_cli,
    tone,
    tone_stream,
)

CLI = "import sys; from edgetune.cli import main; sys.argv[0] = 'edgetune'; main()"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("listen") / "tones.onnx")


@pytest.fixture(scope="module")
def stream_wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("listen-audio") / "stream.wav"
    sf.write(path, tone_stream(EVENTS, 14.0, seed=3), SR, subtype="PCM_16")
    return path


def _lines(stdout):
    return [json.loads(ln) for ln in stdout.strip().splitlines()]


def test_listen_file_json(model, stream_wav):
    r = run_cli(["listen", model, "--file", stream_wav, "--fast", "--json"])
    assert r.returncode == 0, r.stderr
    out = _lines(r.stdout)
    dets, summary = out[:-1], out[-1]
    assert [d["label"] for d in dets] == [e[0] for e in EVENTS]
    assert summary["event"] == "summary" and summary["detections"] == len(EVENTS)
    assert summary["audio_seconds"] == pytest.approx(14.0)
    for key in (
        "dropped_blocks",
        "overflows",
        "inference_ms_mean",
        "inference_ms_p99",
        "real_time_factor",
    ):
        assert key in summary
    assert 0 < summary["real_time_factor"] < 1


def test_listen_stdin_pcm_and_resampling(model, stream_wav):
    pcm16 = sf.read(stream_wav, dtype="int16")[0].astype("<i2").tobytes()
    audio = sf.read(stream_wav, dtype="float32")[0]
    ref = run_cli(["listen", model, "--file", stream_wav, "--fast", "--json"])
    r = run_cli(["listen", model, "-", "--json"], input=pcm16)
    assert r.returncode == 0, r.stderr
    assert _lines(r.stdout)[:-1] == _lines(ref.stdout)[:-1]  # same detections as the file
    # 44.1 kHz on stdin, with an odd trailing byte: resampled to the model's 16 kHz
    pcm44 = (np.clip(soxr.resample(audio, SR, 44100), -1, 1) * 32767).astype(
        "<i2"
    ).tobytes() + b"\x01"
    r = run_cli(["listen", model, "-", "--rate", "44100", "--json"], input=pcm44)
    assert r.returncode == 0, r.stderr
    out = _lines(r.stdout.decode() if isinstance(r.stdout, bytes) else r.stdout)
    assert [d["label"] for d in out[:-1]] == [e[0] for e in EVENTS]
    assert out[-1]["audio_seconds"] == pytest.approx(14.0, abs=0.01)


def test_ctrl_c_prints_summary(model, stream_wav):
    p = subprocess.Popen(
        [sys.executable, "-c", CLI, "listen", str(model), "--file", str(stream_wav), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        # a shell's background job (`pytest &`) ignores SIGINT, and children inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 (no threads yet)
    )
    # on a busy machine start-up alone can take seconds: interrupt once playback has begun
    while "listening on" not in (line := p.stderr.readline()):
        assert line, "listen ended without starting playback"
    time.sleep(1.5)  # real-time playback: about 1.5 s of audio heard
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["event"] == "summary" and summary["interrupted"] is True
    assert 0.5 < summary["audio_seconds"] < 10


def test_portaudio_missing_is_a_clear_error(model, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    env = dict(os.environ, PYTHONPATH=str(fake) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = run_cli(["listen", model, "--seconds", "1"], env=env)
    assert r.returncode == 1
    assert "apt-get install libportaudio2" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------- virtual microphone


@pytest.fixture
def virtual_mic():
    """A PulseAudio null sink `vmic` whose monitor is the default source, kept rendering
    (tools/vmic.py)."""
    vmic = load_tool("vmic")
    mic = vmic.VirtualMic()
    try:
        name = mic.start()
    except vmic.Unavailable as e:
        pytest.skip(str(e))
    try:
        yield name
    finally:
        mic.stop()


def test_listen_virtual_microphone(model, virtual_mic, tmp_path):
    played = tmp_path / "words.wav"
    events = [("low", 1.0, 0.5), ("high", 3.5, 0.6)]
    sf.write(played, tone_stream(events, 6.0, seed=7), SR, subtype="PCM_16")
    p = subprocess.Popen(
        [sys.executable, "-c", CLI, "listen", str(model), "--seconds", "10", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        # wait for the first input callback before playing (the first stream can take 1-2 s)
        deadline = time.time() + 20
        ready = ""
        while time.time() < deadline and "listening on" not in ready:
            r, _, _ = select.select([p.stderr], [], [], 0.5)
            if r:
                line = p.stderr.readline()
                if not line:
                    break
                ready += line
        if "listening on" not in ready:
            p.kill()
            pytest.fail(f"listen never reported its microphone: {ready}{p.stderr.read()}")
        t_play = time.time()
        subprocess.run(["paplay", f"--device={virtual_mic}", str(played)], check=True, timeout=20)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    lines = _lines(out)
    dets, summary = lines[:-1], lines[-1]
    assert summary["event"] == "summary" and summary["audio_seconds"] == pytest.approx(
        10.0, abs=0.05
    )
    assert "microphone" in summary["source"]
    assert [d["label"] for d in dets] == ["low", "high"], (dets, summary)
    gap = dets[1]["time_s"] - dets[0]["time_s"]
    assert abs(gap - 2.5) < 0.5, dets  # heard 2.5 s apart, as played
    assert time.time() - t_play < 30


class _Status:
    def __init__(self, overflow):
        self.input_overflow = overflow


def _fake_sounddevice(signal_48k, overflow_blocks=(3,)):
    """A sounddevice stand-in whose only input refuses 16 kHz and delivers `signal_48k`
    in 20 ms blocks from a thread, ten times faster than real time."""
    import threading
    import types

    sd = types.SimpleNamespace()
    sd.default = types.SimpleNamespace(device=(0, 0))
    sd.query_devices = lambda dev=None, kind=None: {
        "name": "fake mic",
        "max_input_channels": 1,
        "default_samplerate": 48000.0,
    }

    def check_input_settings(device=None, samplerate=None, channels=None, dtype=None):
        if samplerate != 48000:
            raise ValueError("Invalid sample rate")

    sd.check_input_settings = check_input_settings
    opened = {}

    class InputStream:
        def __init__(self, device, samplerate, channels, dtype, blocksize, callback):
            opened.update(samplerate=samplerate, blocksize=blocksize)
            self.callback, self.blocksize, self.active = callback, blocksize, False
            self._stop = threading.Event()

        def _run(self):
            for k, i in enumerate(range(0, len(signal_48k), self.blocksize)):
                if self._stop.is_set():
                    break
                block = signal_48k[i : i + self.blocksize].reshape(-1, 1)
                self.callback(block, len(block), None, _Status(k in overflow_blocks))
                time.sleep(self.blocksize / 48000 / 10)
            self.active = False

        def __enter__(self):
            self.active = True
            self._t = threading.Thread(target=self._run, daemon=True)
            self._t.start()
            return self

        def __exit__(self, *exc):
            self._stop.set()
            self._t.join()
            return False

    sd.InputStream = InputStream
    return sd, opened


def test_microphone_resamples_and_counts_overflows(model, stream_wav, monkeypatch):
    from edgetune.runtime.listen import listen_microphone
    from edgetune.runtime.model import load_model
    from edgetune.runtime.stream import StreamEngine

    audio = sf.read(stream_wav, dtype="float32")[0]
    sd, opened = _fake_sounddevice(soxr.resample(audio, SR, 48000).astype(np.float32))
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    found, ready = [], []
    summary = listen_microphone(
        StreamEngine(load_model(model)),
        seconds=13.5,
        on_detection=found.append,
        on_ready=ready.append,
    )
    assert opened["samplerate"] == 48000 and ready and "48000 Hz" in ready[0]
    assert summary.overflows == 1 and summary.dropped_blocks == 0  # counted, not fatal
    assert summary.audio_seconds == pytest.approx(13.5, abs=0.01)
    assert [d.label for d in found] == [e[0] for e in EVENTS]


# ---------------------------------------------------------------- input limits


def test_listen_input_limits_and_seconds(model, stream_wav, tmp_path):
    r = run_cli(["listen", model, "--file", stream_wav, "--fast", "--json", "--seconds", "5"])
    assert r.returncode == 0, r.stderr
    out = _lines(r.stdout)
    assert [d["label"] for d in out[:-1]] == ["low", "high"]  # the words of the first 5 s
    assert out[-1]["audio_seconds"] == pytest.approx(5.0)
    # a guard above every smoothed score: nothing is sure enough to report
    r = run_cli(["listen", model, "--file", stream_wav, "--fast", "--json", "--min-confidence", "0.999"])  # fmt: skip
    out = _lines(r.stdout)
    assert r.returncode == 0 and len(out) == 1 and out[0]["settings"]["min_confidence"] == 0.999
    # the same words 20 dB down (peaks -30 dBFS): heard without a gate, silence under -30 dBFS
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, sf.read(stream_wav, dtype="float32")[0] * 0.1, SR, subtype="FLOAT")
    r = run_cli(["listen", model, "--file", quiet, "--fast", "--json"])
    assert len(_lines(r.stdout)) == len(EVENTS) + 1
    r = run_cli(["listen", model, "-", "--json", "--min-level", "-30"], input=sf.read(quiet, dtype="int16")[0].tobytes())  # fmt: skip
    out = _lines(r.stdout)
    assert r.returncode == 0 and len(out) == 1, r.stderr
    assert out[0]["inferences"] == 0 and out[0]["quiet_windows"] > 100


# ---------------------------------------------------------------- listen --check


def prompted_session(labels, window=2.0, onset=0.6, lead=0.0, seed=0):
    """Audio answering each prompt in turn: `window` s per prompt, the label's tone at `onset`
    (a label not in TONES is left silent), after `lead` s of room."""
    parts = [noise(lead, level=0.002, seed=seed)] if lead else []
    for k, lab in enumerate(labels):
        w = noise(window, level=0.002, seed=seed + 1 + k)
        if lab in TONES:
            t = tone(TONES[lab], 0.5)
            w[int(onset * SR) : int(onset * SR) + len(t)] += t
        parts.append(w)
    return np.concatenate(parts)


def test_check_from_file(model, tmp_path):
    said = tmp_path / "said.wav"
    # prompts: low mid high, twice; the second `mid` is answered with `high`, one `high` is silent
    sf.write(
        said, prompted_session(["low", "mid", "high", "low", "high", None]), SR, subtype="PCM_16"
    )
    save = tmp_path / "mine"
    r = run_cli(["listen", model, "--check", "--file", said, "--count", "2", "--countdown", "0",
                 "--save", save, "--speaker", "ann", "--json"])  # fmt: skip
    assert r.returncode == 1 and "below the goal of 90.0%" in r.stderr, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["n"] == 6 and res["correct"] == 4 and res["accuracy"] == pytest.approx(4 / 6)
    assert res["per_label"]["mid"] == {
        "n": 2,
        "correct": 1,
        "recall": 0.5,
        "heard": {"mid": 1, "high": 1},
    }
    assert res["per_label"]["high"]["heard"] == {"high": 1, "(nothing)": 1}
    assert res["passed"] is False and res["min_accuracy"] == 0.9
    assert [t["heard"] for t in res["trials"]] == ["low", "mid", "high", "low", "high", "(nothing)"]
    # the utterances heard are kept as `record` writes them; the silent one is not
    saved = sorted(p.relative_to(save).as_posix() for p in save.rglob("*.wav"))
    assert saved == ["high/ann_nohash_0.wav", "low/ann_nohash_0.wav", "low/ann_nohash_1.wav",
                     "mid/ann_nohash_0.wav", "mid/ann_nohash_1.wav"]  # fmt: skip
    assert all(sf.info(save / p).frames == SR for p in saved)
    # a subset of labels that all come right passes; the table says so
    sf.write(said, prompted_session(["low", "high"]), SR, subtype="PCM_16")
    r = run_cli(
        ["listen", model, "--check", "--file", said, "--labels", "low,high", "--count", "1"]
    )
    assert r.returncode == 0, r.stderr
    assert "accuracy  100.0% (2/2), goal 90.0%: PASS" in r.stdout
    r = run_cli(["listen", model, "--check", "--file", said, "--labels", "low,nope"])
    assert r.returncode == 1 and "['nope'] are not events" in r.stderr


def drive_prompts(args, mic, sounds: dict, timeout=90):
    """Run the CLI with `args`; at each `say: <label>` it prints, play sounds[label] into the
    virtual microphone. Returns (returncode, stdout, stderr, labels prompted)."""
    cmd = [sys.executable, "-c", CLI, *map(str, args)]
    return load_tool("vmic").drive_prompts(cmd, mic, sounds.get, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def tone_wavs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tone-words")
    out = {}
    for lab, f in TONES.items():
        out[lab] = root / f"{lab}.wav"
        sf.write(out[lab], tone(f, 0.5), SR, subtype="PCM_16")
    return out


def test_check_virtual_microphone(model, virtual_mic, tone_wavs):
    code, out, err, prompted = drive_prompts(
        [
            "listen",
            model,
            "--check",
            "--count",
            "1",
            "--countdown",
            "0",
            "--window",
            "2.5",
            "--json",
        ],
        virtual_mic,
        tone_wavs,
    )
    assert prompted == ["low", "mid", "high"], err
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["accuracy"] == 1.0 and res["passed"] and "microphone" in res["source"], res
