"""Device side (edgetune.runtime): real tiny ONNX models built with onnx.helper.

The fixture model mean-pools log-mel features over time and applies a fixed
MatMul + bias, with weights chosen so that a pure tone is recognised by the
mel band it falls in: its output is known exactly (a numpy reference computes
it) and it behaves like a keyword spotter on streams of tones.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edgetune.errors import EdgetuneError, ModelError
from edgetune.frontend import FrontEnd, clip_features, mel_filterbank

REPO = Path(__file__).resolve().parents[1]
SR = 16000
TONES = {"low": 400.0, "mid": 1200.0, "high": 3000.0}
LABELS = ["_silence_", "_unknown_", "low", "mid", "high"]
STREAM_META = {"hop_ms": 100, "average_ms": 500, "threshold": 0.7, "suppress_ms": 1000}


# ---------------------------------------------------------------- helpers (shared with test_listen.py)


def tone_weights(fe: FrontEnd, labels=LABELS, tones=TONES):
    """W [n_mels, C], b [C]: logit(tone class) = mean log-mel in its band - mean over bands."""
    fb = mel_filterbank(fe)
    freqs = np.linspace(0, fe.sample_rate // 2, fe.n_freqs)
    w = np.zeros((fe.n_mels, len(labels)), np.float32)
    b = np.zeros(len(labels), np.float32)
    for c, lab in enumerate(labels):
        if lab in tones:
            band = int(np.argmax(fb[int(np.argmin(np.abs(freqs - tones[lab])))]))
            w[:, c] = -1.0 / fe.n_mels
            w[band, c] += 1.0
    b[labels.index("_silence_")] = 2.0
    if "_unknown_" in labels:
        b[labels.index("_unknown_")] = 1.0
    return w, b


def reference_logits(fe: FrontEnd, feats: np.ndarray, labels=LABELS) -> np.ndarray:
    w, b = tone_weights(fe, labels)
    return feats.reshape(len(feats), -1, fe.n_mels).mean(axis=1) @ w + b


def make_model(
    path,
    labels=LABELS,
    fe: FrontEnd | None = None,
    precision="fp32",
    stream=STREAM_META,
    goal=None,
    metadata=True,
    extra_meta=None,
):
    """A real ONNX file: features [B,1,T,M] -> ReduceMean(time) -> MatMul W -> Add b -> logits [B,C]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    fe = fe or FrontEnd()
    w, b = tone_weights(fe, labels)
    nodes = [
        helper.make_node("ReduceMean", ["features", "axes"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tone_recogniser",
        [
            helper.make_tensor_value_info(
                "features", TensorProto.FLOAT, ["batch", 1, fe.n_frames, fe.n_mels]
            )
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(labels)])],
        initializer=[
            numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(b, "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    if metadata:
        meta = {
            "edgetune.format": "edgetune.onnx/1",
            "edgetune.labels": list(labels),
            "edgetune.frontend": fe.to_dict(),
            "edgetune.precision": precision,
            "edgetune.stream": stream,
            "edgetune.goal": goal or {"min_accuracy": 0.9},
            "edgetune.metrics": {"test_accuracy": 1.0},
            "edgetune.lineage": [{"sha256": "0" * 64, "stage": "qat"}],
        }
        meta.update(extra_meta or {})
        for k, v in meta.items():
            model.metadata_props.add(key=k, value=json.dumps(v))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def load_tool(name):
    """A module of tools/ (not a package), loaded once."""
    if name not in sys.modules:
        import importlib.util

        spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def tone(freq, seconds, amp=0.3, sr=SR, rng=None):
    t = np.arange(int(seconds * sr)) / sr
    x = amp * np.sin(2 * np.pi * freq * t)
    ramp = min(len(x) // 4, int(0.01 * sr))  # 10 ms fades: no clicks
    if ramp:
        env = np.ones(len(x))
        env[:ramp] = np.linspace(0, 1, ramp)
        env[-ramp:] = np.linspace(1, 0, ramp)
        x = x * env
    return x.astype(np.float32)


def noise(seconds, level=0.001, seed=0, sr=SR):
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(
        np.float32
    )


def tone_stream(events, seconds, seed=0):
    """Noise with tones at given (label, onset_s, duration_s); returns audio."""
    x = noise(seconds, seed=seed)
    for label, onset, dur in events:
        t = tone(TONES[label], dur)
        i = int(onset * SR)
        x[i : i + len(t)] += t
    return x


def make_tone_folder(root, per_class=6, other=4, seed=0):
    """ROOT/<label>/<speaker>_nohash_<i>.wav of tones; `other` is a label the model lacks."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for lab, f in list(TONES.items()) + [("other", 6500.0)]:
        (root / lab).mkdir(parents=True, exist_ok=True)
        for i in range(per_class if lab != "other" else other):
            dur = rng.uniform(0.4, 0.9)
            x = np.concatenate(
                [
                    noise(0.05, seed=i),
                    tone(f, dur, amp=rng.uniform(0.1, 0.5)),
                    noise(0.05, seed=i + 1),
                ]
            )
            sf.write(root / lab / f"spk{i:02d}{lab}_nohash_0.wav", x, SR, subtype="PCM_16")
    (root / "_background_noise_").mkdir(exist_ok=True)
    sf.write(
        root / "_background_noise_" / "white.wav",
        noise(5, level=0.003, seed=9),
        SR,
        subtype="PCM_16",
    )
    return root


def run_cli(args, env=None, input=None, timeout=120):
    code = "import sys; from edgetune.cli import main; sys.argv[0] = 'edgetune'; main()"
    return subprocess.run(  # noqa: PLW1510 - callers check returncode
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=input is None or isinstance(input, str),
        input=input,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )


def no_torch_env(tmp_path):
    """Environment whose PYTHONPATH shadows torch, torchaudio and onnx with modules that raise
    ImportError and leave a marker file, so even a caught import attempt is seen."""
    block = tmp_path / "blocked"
    marker = tmp_path / "blocked-imports.txt"
    for name in ("torch", "torchaudio", "onnx", "onnxscript"):
        (block / name).mkdir(parents=True, exist_ok=True)
        (block / name / "__init__.py").write_text(
            textwrap.dedent(
                f"""
                import os, traceback
                with open({str(marker)!r}, "a") as fh:
                    fh.write("{name}\\n" + "".join(traceback.format_stack()) + "\\n")
                raise ImportError("{name} is blocked: the device side must not import it")
                """
            )
        )
    env = dict(os.environ)
    env["PYTHONPATH"] = str(block) + os.pathsep + env.get("PYTHONPATH", "")
    return env, marker


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("runtime")


@pytest.fixture(scope="module")
def model_path(workdir):
    return make_model(workdir / "tones.onnx")


@pytest.fixture(scope="module")
def rec(model_path):
    from edgetune.runtime.model import load_model

    return load_model(model_path, threads=1)


@pytest.fixture(scope="module")
def tone_dir(workdir):
    return make_tone_folder(workdir / "data", per_class=6, other=4)


# ---------------------------------------------------------------- model metadata


def test_metadata_round_trip(rec, model_path):
    assert rec.labels == LABELS
    assert rec.frontend == FrontEnd()
    assert rec.precision == "fp32"
    assert (
        rec.stream.hop_ms == 100 and rec.stream.suppress_ms == 1000 and rec.stream.threshold == 0.7
    )
    assert rec.min_accuracy == 0.9
    assert rec.metrics == {"test_accuracy": 1.0}
    assert rec.lineage[0]["stage"] == "qat"
    assert rec.file_bytes == model_path.stat().st_size


def test_predict_matches_reference(rec):
    fe = rec.frontend
    clips = [tone(f, 0.6) for f in TONES.values()] + [noise(1.0)]
    feats = np.stack([clip_features(fe, c) for c in clips])
    got = rec.predict_clips(clips, batch_size=2)
    np.testing.assert_allclose(got, reference_logits(fe, feats), rtol=1e-4, atol=1e-3)
    assert [LABELS[i] for i in got.argmax(1)] == ["low", "mid", "high", "_silence_"]


def test_model_without_metadata_is_refused(workdir):
    from edgetune.runtime.model import load_model

    bare = make_model(workdir / "bare.onnx", metadata=False)
    with pytest.raises(ModelError) as e:
        load_model(bare)
    msg = str(e.value)
    assert "bare.onnx" in msg and "edgetune.format" in msg and "edgetune export" in msg


def test_model_errors_are_clear(workdir):
    from edgetune.runtime.model import load_model

    with pytest.raises(ModelError, match="no such model file"):
        load_model(workdir / "missing.onnx")
    junk = workdir / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        load_model(junk)
    wrong = make_model(workdir / "wrong.onnx", extra_meta={"edgetune.labels": ["a", "b"]})
    with pytest.raises(ModelError, match="2 labels"):
        load_model(wrong)


def test_cli_refuses_bare_model(workdir):
    bare = make_model(workdir / "bare2.onnx", metadata=False)
    r = run_cli(["verify", bare, "--data", workdir])
    assert r.returncode == 1
    assert (
        r.stderr.startswith("error: ")
        and "Traceback" not in r.stderr
        and "edgetune export" in r.stderr
    )


# ---------------------------------------------------------------- dataset


# ---------------------------------------------------------------- verify


def test_verify_known_result(rec, tone_dir):
    from edgetune.runtime.verify import format_report, verify

    r = verify(rec, tone_dir, split="all")
    # 22 clips + 6 `_silence_` clips cut from the background noise (one class's worth).
    # Every tone of low/mid/high is right, silence is silence; the 4 `other` clips map to
    # _unknown_ and come out _silence_.
    assert r["n"] == 28 and r["correct"] == 24
    assert r["accuracy"] == pytest.approx(24 / 28)
    assert r["passed"] is False and r["min_accuracy"] == 0.9
    assert r["mapped_to_unknown"] == ["other"]
    conf = np.array(r["confusion"])
    unk, sil = LABELS.index("_unknown_"), LABELS.index("_silence_")
    assert conf[unk, sil] == 4 and conf[sil, sil] == 6 and conf.sum() == 28
    assert r["per_class"]["low"]["recall"] == 1.0 and r["per_class"]["_unknown_"]["recall"] == 0.0
    assert r["per_class"]["_silence_"]["precision"] == pytest.approx(6 / 10)
    assert "confusion" in format_report(r) and "FAIL" in format_report(r)
    # per speaker, worst first: the four speakers of `other` (a label the model lacks) miss
    speakers = r["per_speaker"]
    assert sum(c["n"] for c in speakers.values()) == 28
    assert [name for name in speakers][:4] == [f"spk{i:02d}other" for i in range(4)]
    assert all(c["accuracy"] == 0.0 for c in list(speakers.values())[:4])
    assert list(speakers.values())[-1]["accuracy"] == 1.0
    assert f"per speaker, the worst 12 of {len(speakers)}" in format_report(r)
    # recordings, not the built-in corpus: the report says which
    assert r["voices"] == "recorded" and "28 clips of recorded voices" in format_report(r)
    (tone_dir / "corpus.json").write_text("{}")
    try:
        assert verify(rec, tone_dir, split="all")["voices"] == "synthetic"
    finally:
        (tone_dir / "corpus.json").unlink()
    # the split is the hash rule's
    from edgetune.data.dataset import load_dataset

    n_test = len(load_dataset(tone_dir, labels=rec.labels).split("test"))
    if n_test:
        assert verify(rec, tone_dir, split="test", min_accuracy=0.5)["n"] == n_test


def test_verify_cli_json_and_exit_code(model_path, tone_dir, tmp_path):
    out = tmp_path / "report.json"
    r = run_cli(
        ["verify", model_path, "--data", tone_dir, "--split", "all", "--json", "--out", out]
    )
    assert r.returncode == 1, r.stderr
    assert "below the goal" in r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    for key in (
        "accuracy",
        "n",
        "per_class",
        "confusion",
        "labels",
        "passed",
        "min_accuracy",
        "model",
        "precision",
    ):
        assert key in last
    assert json.loads(out.read_text())["n"] == 28
    ok = run_cli(
        ["verify", model_path, "--data", tone_dir, "--split", "all", "--min-accuracy", "0.8"]
    )
    assert ok.returncode == 0, ok.stderr
    assert "PASS" in ok.stdout and "confusion" in ok.stdout


def test_verify_input_limits(rec, tone_dir):
    from edgetune.runtime.verify import UNSURE, format_report, verify

    base = verify(rec, tone_dir, split="all")
    assert UNSURE not in base["labels"] and base["quiet"] == 0 and base["skipped"] == []
    # answers under the guard are `_unsure_`, a wrong answer in a column of its own
    from edgetune.data.dataset import ClipLoader, load_dataset
    from edgetune.runtime.model import softmax

    ds = load_dataset(tone_dir, labels=rec.labels)
    proba = softmax(rec.predict_clips(ClipLoader(rec.frontend).clips(ds.examples)))
    truth = np.array([rec.labels.index(e.label) for e in ds.examples])
    sure = proba.max(axis=1) >= 0.9
    assert 0 < sure.sum() < len(sure)
    r = verify(rec, tone_dir, split="all", min_confidence=0.9)
    assert r["labels"][-1] == UNSURE and UNSURE not in r["per_class"]
    assert r["unsure"] == (~sure).sum()
    assert r["correct"] == (sure & (proba.argmax(axis=1) == truth)).sum() < base["correct"]
    assert np.array(r["confusion"])[:, -1].sum() == r["unsure"]
    assert f"{UNSURE} (counted wrong)" in format_report(r)
    # a -30 dBFS gate: only the background silence (-50 dBFS and below) is that quiet, and it
    # is answered silence without the model; at -5 dBFS everything is, so only silence is right
    r = verify(rec, tone_dir, split="all", min_level_db=-30)
    assert r["quiet"] == 6 and r["correct"] == base["correct"]
    r = verify(rec, tone_dir, split="all", min_level_db=-5)
    assert r["quiet"] == 28 and r["correct"] == 6 and "answered silence" in format_report(r)
    # clips over the length limit are skipped and named
    r = verify(rec, tone_dir, split="all", max_seconds=0.8)
    assert r["skipped"] and all(s["seconds"] > 0.8 for s in r["skipped"])
    assert r["n"] + len(r["skipped"]) == 28
    assert r["skipped"][0]["path"] in format_report(r)


def test_verify_cli_input_limits(model_path, tone_dir):
    r = run_cli(["verify", model_path, "--data", tone_dir, "--split", "all",
                 "--min-confidence", "0.9", "--min-level", "-30", "--json"])  # fmt: skip
    assert r.returncode == 1, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["limits"] == {"min_level_db": -30.0, "min_confidence": 0.9, "max_seconds": None}
    assert last["labels"][-1] == "_unsure_" and last["quiet"] == 6
    r = run_cli(
        ["verify", model_path, "--data", tone_dir, "--split", "all", "--max-seconds", "0.01"]
    )
    assert r.returncode == 1 and "longer than 0.01 s (e.g. " in r.stderr, r.stderr
    r = run_cli(["verify", model_path, "--data", tone_dir, "--min-level", "6"])
    assert r.returncode == 2 and "--min-level" in r.stderr


# ---------------------------------------------------------------- streaming

EVENTS = [
    ("low", 1.2, 0.5),
    ("high", 4.0, 0.6),
    ("mid", 6.5, 0.4),
    ("low", 9.0, 0.5),
    ("low", 11.5, 0.5),
]


@pytest.fixture(scope="module")
def stream_audio():
    return tone_stream(EVENTS, 14.0, seed=3)


def _detect(rec, audio, chunk, **kw):
    from edgetune.runtime.stream import StreamEngine, run_stream

    return run_stream(StreamEngine(rec, **kw), audio, chunk)


def test_stream_detects_events(rec, stream_audio):
    dets = _detect(rec, stream_audio, 1600)
    assert [d.label for d in dets] == [e[0] for e in EVENTS]
    for d, (_, onset, dur) in zip(dets, EVENTS):
        assert onset < d.time_s < onset + dur + 1.0
        assert d.confidence >= 0.7
    assert all(d.label not in ("_silence_", "_unknown_") for d in dets)


@pytest.mark.parametrize("chunk", [7, 160, 1000, 4096])
def test_stream_independent_of_chunk_size(rec, stream_audio, chunk):
    ref = _detect(rec, stream_audio, 1600)
    got = _detect(rec, stream_audio, chunk)
    assert [(d.label, d.time_s) for d in got] == [(d.label, d.time_s) for d in ref]
    np.testing.assert_allclose([d.confidence for d in got], [d.confidence for d in ref], atol=1e-5)


def test_stream_posteriors_match_clip_inference(rec, stream_audio):
    """At each hop the ring holds the last clip's frames: log_mel of the audio so far,
    preceded by the features of silence while less than a clip has arrived."""
    from edgetune.frontend import log_mel
    from edgetune.runtime.stream import PosteriorStream

    ps = PosteriorStream(rec, 100)
    outs = []
    for i in range(0, len(stream_audio), 999):
        outs.extend(ps.push(stream_audio[i : i + 999]))
    fe = rec.frontend
    n_frames_total = 1 + (len(stream_audio) - fe.win_length) // fe.hop_length
    assert len(outs) == n_frames_total // 10  # one posterior per 10 frames (100 ms)
    for k in (3, 9, 40, 97):
        t, p = outs[k]
        end = round(t * fe.sample_rate)
        frames = log_mel(fe, stream_audio[:end])
        assert len(frames) == 10 * (k + 1)
        window = frames[-fe.n_frames :]
        if len(window) < fe.n_frames:
            silence = np.full(
                (fe.n_frames - len(window), fe.n_mels), np.log(fe.log_floor), np.float32
            )
            window = np.concatenate([silence, window])
        ref = rec.predict_proba(window[None, None])[0]
        np.testing.assert_allclose(p, ref, atol=1e-5)


def test_reset_restarts(rec, stream_audio):
    from edgetune.runtime.stream import StreamEngine, run_stream

    eng = StreamEngine(rec)
    first = run_stream(eng, stream_audio, 1000)
    assert eng.audio_seconds == pytest.approx(14.0)
    eng.reset()
    assert eng.audio_seconds == 0 and eng.n_detections == 0
    again = run_stream(eng, stream_audio, 1000)
    assert [(d.label, d.time_s) for d in again] == [(d.label, d.time_s) for d in first]
    # a reset mid-word forgets it: nothing carried over from before the reset
    eng.reset()
    eng.push(tone(TONES["high"], 0.6))
    eng.reset()
    assert run_stream(eng, noise(3.0, seed=5), 1600) == []


def test_stream_settings(rec, stream_audio):
    # a 3 s refractory time: `mid` (2.5 s after `high`) falls inside it and is lost; a word still
    # sounding when it ends (`high`, the last `low`) is reported then
    dets = _detect(rec, stream_audio, 1600, suppress_ms=3000)
    assert [d.label for d in dets] == ["low", "high", "low", "low"]
    assert all(b.time_s - a.time_s >= 3.0 - 1e-9 for a, b in itertools.pairwise(dets))
    assert _detect(rec, stream_audio, 1600, threshold=1.0) == []
    with pytest.raises(EdgetuneError, match="multiple"):
        _detect(rec, stream_audio, 1600, hop_ms=15)


def test_stream_input_limits(rec, stream_audio):
    from edgetune.runtime.stream import StreamEngine, run_stream

    plain = StreamEngine(rec)
    ref = run_stream(plain, stream_audio, 1600)
    windows = plain.stats()["inferences"]
    # tones at -13 dBFS over noise at -60: a -40 dBFS gate keeps every word, and the windows
    # of noise alone are never run through the model; the same for any chunk size
    for chunk in (7, 1600, 4096):
        eng = StreamEngine(rec, min_level_db=-40)
        got = run_stream(eng, stream_audio, chunk)
        assert [(d.label, d.time_s) for d in got] == [(d.label, d.time_s) for d in ref]
        st = eng.stats()
        assert st["quiet_windows"] > 10 and st["inferences"] > 10
        assert st["inferences"] + st["quiet_windows"] == windows
    # the same stream 20 dB quieter is still heard without a gate, and is silence under -30 dBFS
    # (this hand-set model's confidence is the tone's log contrast to the front end's floor)
    quiet = stream_audio * 0.1
    assert [d.label for d in _detect(rec, quiet, 1600)] == [e[0] for e in EVENTS]
    eng = StreamEngine(rec, min_level_db=-30)
    assert run_stream(eng, quiet, 1600) == [] and eng.stats()["inferences"] == 0
    # the confidence guard: answers under it are unknown, never reported
    strict = _detect(rec, stream_audio, 1600, min_confidence=0.9)  # the same words, once surer
    assert [d.label for d in strict] == [d.label for d in ref]
    assert all(d.confidence >= 0.9 and d.time_s > r.time_s for d, r in zip(strict, ref))
    assert _detect(rec, stream_audio, 1600, min_confidence=0.999) == []
    low = _detect(rec, stream_audio, 1600, min_confidence=0.5)  # under the threshold: no change
    assert [(d.label, d.time_s) for d in low] == [(d.label, d.time_s) for d in ref]
    with pytest.raises(EdgetuneError, match="full scale"):
        _detect(rec, stream_audio, 1600, min_level_db=3)
    with pytest.raises(EdgetuneError, match="minimum confidence"):
        _detect(rec, stream_audio, 1600, min_confidence=1.5)


# ---------------------------------------------------------------- devices and bench


def test_device_profiles():
    from edgetune.runtime.devices import get_profile, load_profiles

    profiles = load_profiles()
    for name in ("raspberry-pi-4", "raspberry-pi-zero-2w", "jetson-nano", "x86-64-laptop"):
        p = profiles[name]
        assert p.cores >= 1 and p.threads >= 1 and p.memory_mb > 0 and p.latency_budget_ms > 0
        assert p.precision in ("fp32", "int8") and p.description
    with pytest.raises(EdgetuneError, match="no device profile"):
        get_profile("toaster")
    r = run_cli(["devices", "--json"])
    assert r.returncode == 0 and "raspberry-pi-4" in json.loads(r.stdout.strip().splitlines()[-1])


def test_devices_env_override(tmp_path):
    (tmp_path / "mine.toml").write_text(
        'description = "d"\ncpu = "c"\ncores = 1\nthreads = 1\nmemory_mb = 64\n'
        'model_size_budget_kb = 10\nlatency_budget_ms = 1\nprecision = "int8"\n'
    )
    env = dict(os.environ, EDGETUNE_DEVICES=str(tmp_path))
    r = run_cli(["devices"], env=env)
    assert r.returncode == 0 and "mine" in r.stdout and "raspberry" not in r.stdout


def test_bench(model_path):
    from edgetune.runtime.bench import bench

    r = bench(model_path, device="raspberry-pi-4", seconds=5, runs=30)
    assert r["file_bytes"] == model_path.stat().st_size
    for k in (
        "frontend_ms_per_hop",
        "latency_1_thread",
        "latency_device_threads",
        "stream",
        "peak_rss_mb",
    ):
        assert k in r
    assert (
        r["latency_1_thread"]["p50_ms"] > 0
        and r["latency_1_thread"]["p99_ms"] >= r["latency_1_thread"]["p50_ms"]
    )
    assert 0 < r["stream"]["real_time_factor"] < 1
    assert {c["budget"] for c in r["checks"]} >= {"model_size", "latency", "real_time", "memory"}
    assert r["passed"] == all(c["passed"] for c in r["checks"])


# ---------------------------------------------------------------- the device boundary


def test_runtime_imports_no_torch_or_onnx():
    src = "\n".join(p.read_text() for p in (REPO / "edgetune" / "runtime").glob("*.py"))
    assert not re.search(r"^\s*(import|from)\s+(torch|torchaudio|onnx)\b", src, re.MULTILINE)


def test_commands_run_without_torch(tmp_path, model_path, tone_dir):
    env, marker = no_torch_env(tmp_path)
    wav = tmp_path / "s.wav"
    sf.write(wav, tone_stream(EVENTS[:2], 6.0), SR, subtype="PCM_16")
    runs = {
        "verify": [
            "verify",
            model_path,
            "--data",
            tone_dir,
            "--split",
            "all",
            "--min-accuracy",
            "0.5",
            "--json",
        ],
        "bench": [
            "bench",
            model_path,
            "--device",
            "raspberry-pi-4",
            "--seconds",
            "3",
            "--runs",
            "20",
            "--json",
        ],
        "listen": ["listen", model_path, "--file", wav, "--fast", "--json"],
        "check": ["listen", model_path, "--check", "--file", wav, "--count", "1", "--json"],
        "record": ["record", "--labels", "low", "--count", "1", "--out", tmp_path / "rec",
                   "--file", wav, "--background", "1", "--countdown", "0", "--yes", "--json"],
    }  # fmt: skip
    for name, args in runs.items():
        r = run_cli(args, env=env)
        assert r.returncode in (0, 1) and r.stdout.strip(), (name, r.stderr)
        assert "Traceback" not in r.stderr, (name, r.stderr)
        json.loads(r.stdout.strip().splitlines()[-1])
    assert not marker.exists(), marker.read_text()
    # the blocker does block
    r = subprocess.run(
        [sys.executable, "-c", "import torch"], check=False, env=env, capture_output=True, text=True
    )
    assert r.returncode != 0 and marker.exists()


# ---------------------------------------------------------------- streaming evaluation


def test_make_stream_unknown_share_sets_the_mix_of_other_words(tone_dir, tmp_path):
    from edgetune.errors import DataError
    from edgetune.runtime.streameval import make_stream, read_truth

    mixed = tmp_path / "mixed"
    shutil.copytree(tone_dir, mixed)
    (mixed / "other").rename(mixed / "_unknown_")

    def unknown_share(share):
        wav = tmp_path / f"s{share}.wav"
        info = make_stream(mixed, "all", minutes=3.0, seed=2, out_wav=wav, out_csv=wav.with_suffix(".csv"),
                           gap_s=(0.5, 1.0), unknown_share=share)
        words = read_truth(wav.with_suffix(".csv"))
        assert info["unknown_words"] == sum(w.label == "_unknown_" for w in words)
        return info["unknown_words"] / len(words)

    assert unknown_share(0.0) == 0.0 and unknown_share(1.0) == 1.0
    assert 0.3 < unknown_share(0.5) < 0.7  # 4 of 22 clips are other words: 18% without the option
    with pytest.raises(DataError, match="needs both"):
        make_stream(tone_dir, "all", minutes=1.0, out_wav=tmp_path / "n.wav", out_csv=tmp_path / "n.csv",
                    unknown_share=0.5)


def test_make_stream_and_stream_eval(rec, model_path, tone_dir, tmp_path):
    from edgetune.runtime.streameval import calibrate, make_stream, read_truth, stream_eval

    wav, truth_csv = tmp_path / "s.wav", tmp_path / "s.csv"
    info = make_stream(tone_dir, "all", minutes=1.0, seed=1, out_wav=wav, out_csv=truth_csv)
    assert (
        info["seconds"] == 60.0
        and info["words"] >= 8
        and "_background_noise_" in info["background"]
    )
    assert sf.info(str(wav)).duration == pytest.approx(60.0)
    words = read_truth(truth_csv)
    assert len(words) == info["words"]
    gaps = [b.onset_s - a.offset_s for a, b in itertools.pairwise(words)]
    assert min(gaps) >= 2.0 - 1e-3 and max(gaps) <= 6.0 + 1e-3
    # same seed, same stream
    make_stream(
        tone_dir, "all", minutes=1.0, seed=1, out_wav=tmp_path / "t.wav", out_csv=tmp_path / "t.csv"
    )
    assert (tmp_path / "t.csv").read_text() == truth_csv.read_text()

    r = stream_eval(rec, wav, truth_csv)
    targets = sum(w.label in TONES for w in words)
    assert r["words"] == targets and r["other_words"] == len(words) - targets
    assert r["correct"] + r["wrong"] + r["false_rejects"] == targets
    assert r["correct_pct"] >= 80 and r["false_accepts"] == 0 and r["false_accepts_per_hour"] == 0
    assert r["latency_ms_mean"] is not None and 0 < r["latency_from_onset_ms_mean"] < 1500

    c = calibrate(
        rec,
        wav,
        truth_csv,
        average_grid=(300, 500),
        threshold_grid=(0.5, 0.7, 0.9),
        suppress_grid=(500, 1000),
    )
    assert c["constraint_met"] and c["grid_size"] == 12
    assert c["result"]["correct"] >= r["correct"] and c["result"]["false_accepts_per_hour"] <= 2.0

    cli = run_cli(["stream-eval", model_path, "--stream", wav, "--truth", truth_csv, "--json"])
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout.strip().splitlines()[-1])["correct"] == r["correct"]


def test_data_stream_names_its_wav_and_refuses_other_formats_before_building(tone_dir, tmp_path):
    r = run_cli(["data", "stream", tone_dir, "--split", "all", "--minutes", "0.2", "--out", tmp_path / "s"])
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "s.wav").exists() and (tmp_path / "s.csv").exists()
    bad = run_cli(["data", "stream", tone_dir, "--minutes", "0.2", "--out", tmp_path / "s.mp4"])
    assert bad.returncode == 1 and "s.mp4" in bad.stderr and ".wav or .flac" in bad.stderr
    assert "Traceback" not in bad.stderr and not list(tmp_path.glob("*.mp4*"))


def test_stream_eval_scoring_rules():
    from edgetune.runtime.stream import Detection
    from edgetune.runtime.streameval import Word, score_detections

    truth = [
        Word("low", 1.0, 1.5),
        Word("other", 5.0, 5.5),
        Word("high", 9.0, 9.4),
        Word("mid", 13.0, 13.5),
    ]
    dets = [
        Detection(1.6, "low", 0.9),  # correct, 100 ms after the end
        Detection(1.9, "low", 0.9),  # the word is taken: a false accept
        Detection(5.3, "high", 0.9),  # on a word outside the vocabulary: a false accept
        Detection(9.5, "mid", 0.9),  # wrong label
        Detection(20.0, "low", 0.9),  # nothing there: a false accept
    ]  # mid at 13 s is missed: a false reject
    r = score_detections(dets, truth, LABELS, audio_seconds=3600.0, tolerance_ms=750)
    assert (r["words"], r["correct"], r["wrong"], r["false_accepts"], r["false_rejects"]) == (
        3,
        1,
        1,
        3,
        1,
    )
    assert r["false_accepts_per_hour"] == 3.0 and r["latency_ms_mean"] == pytest.approx(100.0)
    assert r["correct_pct"] == pytest.approx(100 / 3) and r["false_positive_pct"] == pytest.approx(
        100.0
    )
    assert r["correct_pct_per_label"] == {"high": 0.0, "low": 100.0, "mid": 0.0}


def test_bench_runtime_tool(model_path, workdir):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_runtime", REPO / "tools" / "bench_runtime.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    int8 = make_model(workdir / "tones-int8.onnx", precision="int8")
    r = tool.bench_models([model_path, int8], seconds=2, runs=20, threads=1)
    assert [m["precision"] for m in r["models"]] == ["fp32", "int8"]
    assert all(
        m["backend"] == "onnxruntime" and m["stream_real_time_factor"] > 0 for m in r["models"]
    )
    assert len(r["comparison"]) == 1 and r["comparison"][0]["size_ratio"] == pytest.approx(
        1.0, abs=0.05
    )


def test_mine_negatives_keeps_windows_where_an_other_word_is_heard_as_a_word(rec, model_path, tmp_path):
    """tools/mine_negatives.py: an other word that sounds like `mid` gives `_unknown_` clips of
    exactly the heard window, in the train split; one heard as nothing, and target words, none."""
    from edgetune.data.dataset import load_dataset
    from edgetune.runtime.streameval import Word, write_truth

    audio = noise(14.0, seed=3)
    audio[int(2 * SR) : int(2.6 * SR)] += tone(TONES["mid"], 0.6)  # an other word heard as `mid`
    audio[int(6 * SR) : int(6.6 * SR)] += tone(6500.0, 0.6)  # an other word heard as nothing
    audio[int(10 * SR) : int(10.6 * SR)] += tone(TONES["low"], 0.6)  # a target word
    wav, csv_path = tmp_path / "train.wav", tmp_path / "train.csv"
    sf.write(wav, audio, SR, subtype="FLOAT")
    write_truth(csv_path, [Word("_unknown_", 2.0, 2.6), Word("_unknown_", 6.0, 6.6), Word("low", 10.0, 10.6)])

    out = tmp_path / "mined"
    summary = load_tool("mine_negatives").mine(str(model_path), str(wav), str(csv_path), out,
                                               min_score=0.5, per_word=3, tolerance_ms=750, hop_ms=100)
    assert summary["other_words"] == 2 and summary["words_with_windows_kept"] == 1
    assert summary["windows_kept"] == 3 and summary["heard_as"] == {"mid": 3}
    clips = sorted((out / "_unknown_").glob("*.wav"))
    assert len(clips) == 3 and all(sf.info(str(c)).frames == rec.frontend.clip_samples for c in clips)
    ds = load_dataset(out, silence=False)
    assert {(e.label, e.split) for e in ds.examples} == {("_unknown_", "train")}


def test_calibrate_save_writes_the_settings_into_the_model(model_path, tone_dir, tmp_path):
    """`stream-eval --calibrate --save`: the settings found become the model's own (what
    `listen` uses by default), with where they came from; the rest of the file is unchanged."""
    from edgetune.runtime.model import load_model
    from edgetune.runtime.streameval import make_stream

    model = tmp_path / "m.onnx"
    shutil.copy(model_path, model)
    wav, truth = tmp_path / "val.wav", tmp_path / "val.csv"
    make_stream(tone_dir, "all", minutes=1.0, seed=4, out_wav=wav, out_csv=truth)
    before = load_model(model)

    r = run_cli(["stream-eval", model, "--stream", wav, "--truth", truth, "--calibrate", "--save", "--json"])
    assert r.returncode == 0, r.stderr
    best = json.loads(r.stdout.strip().splitlines()[-1])["best"]
    after = load_model(model)
    assert after.stream.to_dict() == {**before.stream.to_dict(), **best}
    assert after.stream.to_dict() != before.stream.to_dict()  # the grid does not hold the defaults
    calibrated = after.metadata["edgetune.stream"]["calibrated"]
    assert calibrated["stream"] == str(wav) and calibrated["false_accepts_per_hour"] <= 2.0
    assert after.labels == before.labels and after.frontend == before.frontend
    assert not list(tmp_path.glob(".m.onnx.*"))  # no temp file left

    r = run_cli(["stream-eval", model, "--stream", wav, "--truth", truth, "--save"])
    assert r.returncode == 2 and "add --calibrate" in r.stderr


def test_calibrate_on_split_tunes_the_model_on_a_stream_it_makes_and_discards(model_path, tone_dir, tmp_path,
                                                                            monkeypatch):
    """What export runs: a stream of one split's clips in a temporary folder, calibrated on,
    the settings written into the model only when they keep the false-accept bound."""
    import tempfile

    from edgetune.runtime.model import load_model
    from edgetune.runtime.streameval import calibrate_on_split, format_stream_calibration

    made = []
    real_tempdir = tempfile.TemporaryDirectory
    monkeypatch.setattr(tempfile, "TemporaryDirectory", lambda **kw: made.append(kw) or real_tempdir(
        **{**kw, "dir": tmp_path / "tmp"}))
    (tmp_path / "tmp").mkdir()
    model = tmp_path / "m.onnx"
    shutil.copy(model_path, model)
    before = load_model(model).stream.to_dict()
    grid_keys = {"hop_ms", "average_ms", "threshold", "suppress_ms"}

    refused = calibrate_on_split(model, tone_dir, split="all", minutes=1.0, max_fa_per_hour=-1.0)
    assert not refused["saved"] and load_model(model).stream.to_dict() == before
    assert refused["settings"] == {k: v for k, v in before.items() if k in grid_keys}
    assert "no setting kept <= -1 false accepts an hour" in format_stream_calibration(refused)

    r = calibrate_on_split(model, tone_dir, split="all", minutes=1.0)
    after = load_model(model)
    assert r["saved"] and r["stream"] == f"{tone_dir} (all split), 1 min, seed 0" and r["words"] > 5
    assert set(r["settings"]) == grid_keys
    assert after.stream.to_dict() == {**before, **r["settings"]} != before
    assert after.metadata["edgetune.stream"]["calibrated"]["stream"] == r["stream"]
    assert "tuned on" in format_stream_calibration(r)
    assert len(made) == 2 and not list((tmp_path / "tmp").iterdir())  # the streams are gone


def test_set_metadata_changes_one_entry_and_keeps_the_rest_of_the_file(model_path, tmp_path):
    """The device side rewrites metadata without the onnx package; onnx reads the result."""
    import onnx

    from edgetune.errors import ModelError
    from edgetune.runtime.onnxmeta import read_metadata, set_metadata

    path = tmp_path / "m.onnx"
    shutil.copy(model_path, path)
    before = onnx.load(str(path))
    assert read_metadata(path) == {p.key: p.value for p in before.metadata_props}
    set_metadata(path, "edgetune.stream", '{"threshold": 0.5}')
    set_metadata(path, "note", "ünïcode")
    after = onnx.load(str(path))
    onnx.checker.check_model(after)
    assert after.graph.SerializeToString() == before.graph.SerializeToString()
    assert after.ir_version == before.ir_version and after.opset_import == before.opset_import
    expected = {p.key: p.value for p in before.metadata_props} | {
        "edgetune.stream": '{"threshold": 0.5}', "note": "ünïcode"}
    assert {p.key: p.value for p in after.metadata_props} == expected == read_metadata(path)
    (tmp_path / "bad.onnx").write_bytes(b"\x0a\xff\xff")
    with pytest.raises(ModelError, match="not a readable ONNX file"):
        set_metadata(tmp_path / "bad.onnx", "k", "v")


def test_heldout_set_keeps_only_voices_no_model_learnt_or_selected_on(tmp_path):
    """tools/heldout_set.py: a second corpus's clips of the first one's train and validation
    voices are left out; its own new voices and the first one's test voices are kept, as test."""
    from conftest import make_tone_dataset, speakers_covering_splits, tone_clip

    from edgetune.data.dataset import load_dataset, which_split

    old = make_tone_dataset(tmp_path / "old", clips_per_speaker=1)
    new = make_tone_dataset(tmp_path / "new", clips_per_speaker=1, seed=1, noise=False)
    rng = np.random.default_rng(2)
    for speaker in ("fresh0", "fresh1"):
        sf.write(new / "low" / f"{speaker}_nohash_0.wav", tone_clip(300.0, rng), SR)
    n = load_tool("heldout_set").write_heldout(new, [old])
    ds = load_dataset(new / "heldout.csv", silence=False)
    old_test = {s for s in speakers_covering_splits() if which_split(s) == "test"}
    assert {e.speaker for e in ds.examples} == old_test | {"fresh0", "fresh1"}
    assert {e.split for e in ds.examples} == {"test"} and n["clips"] == len(ds.examples)
    assert n["left_out"] == 3 * (len(speakers_covering_splits()) - len(old_test))


def test_per_speaker_accuracy_worst_first():
    from edgetune.metrics import per_speaker
    from edgetune.runtime.verify import _speaker_lines

    got = per_speaker(["ann", "bob", "ann", "bob", "cy"], [0, 1, 2, 0, 1], [0, 2, 1, 2, 1])
    assert list(got) == ["bob", "ann", "cy"]
    assert got["ann"] == {"n": 2, "correct": 1, "accuracy": 0.5}
    lines = _speaker_lines(got)
    assert lines[0] == "per speaker" and "ann" in lines[2] and "50.0%  (1/2)" in lines[2]
    assert _speaker_lines({"one": got["ann"]}) == []  # one speaker: the total says it all
