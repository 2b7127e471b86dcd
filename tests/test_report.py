"""report and explain: a tiny run folder made without training, figures checked as images."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from edgetune.audio import write_audio
from edgetune.cli.common import ErrorHandlingGroup
from edgetune.cli.report import COMMANDS
from edgetune.frontend import FrontEnd
from edgetune.metrics import classification_report

LABELS = ["low", "mid", "high"]


@pytest.fixture(scope="module")
def cli():
    group = ErrorHandlingGroup("edgetune")
    for c in COMMANDS:
        group.add_command(c)
    return group


def _invoke(cli, args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _image(data: bytes) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(data), format="png")


def _assert_real_png(data: bytes, min_side: int = 100) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = _image(data)
    assert img.ndim == 3 and min(img.shape[:2]) >= min_side
    assert float(img[..., :3].std()) > 0.01  # not a blank canvas


def _verify(rng, n=90, acc=0.9):
    y = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < acc, y, rng.integers(0, 3, n))
    r = classification_report(y, pred, LABELS)
    r.update(min_accuracy=0.9, passed=r["accuracy"] >= 0.9, precision="int8")
    return r


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory):
    import torch

    from edgetune.nets import create_model
    from edgetune.train.checkpoint import make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    fe = FrontEnd()
    model = create_model("dscnn-s", 3, fe.n_frames, fe.n_mels)
    ckpt = make_checkpoint(model, labels=LABELS, frontend=fe, stage="finetuned",
                           data={"source": "/data/tones"},
                           metrics={"val_accuracy": 0.93, "test_accuracy": 0.92,
                                    "base_test_accuracy": 0.41})
    path = tmp_path_factory.mktemp("ckpt") / "finetuned.pt"
    save_checkpoint(ckpt, path)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, ckpt_path):
    run = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    (run / "finetuned.pt").write_bytes(ckpt_path.read_bytes())
    stages = [
        {"stage": "base", "params": 24000, "macs": 2_500_000, "fp32_bytes": 98000,
         "int8_bytes": None, "val_accuracy": None, "test_accuracy": 0.41},
        {"stage": "finetuned", "params": 24000, "macs": 2_500_000, "fp32_bytes": 98000,
         "int8_bytes": None, "val_accuracy": 0.93, "test_accuracy": 0.92},
        {"stage": "pruned", "params": 12000, "macs": 1_200_000, "fp32_bytes": 50000,
         "int8_bytes": None, "val_accuracy": 0.92, "test_accuracy": 0.915},
        {"stage": "int8", "params": 12000, "macs": 1_200_000, "fp32_bytes": 50000,
         "int8_bytes": 16000, "val_accuracy": 0.915, "test_accuracy": 0.91},
    ]
    (run / "stages.json").write_text(json.dumps(stages))
    with open(run / "log.jsonl", "w") as f:
        f.writelines(json.dumps({"epoch": e, "train_loss": 1.2 / e, "train_accuracy": 1 - 0.5 / e,
                                "val_accuracy": 1 - 0.45 / e}) + "\n" for e in range(1, 6))
    (run / "verify.json").write_text(json.dumps(_verify(rng, acc=0.92)))
    (run / "verify-base.json").write_text(json.dumps(_verify(rng, acc=0.4)))
    device = {"name": "raspberry-pi-4", "latency_budget_ms": 20.0, "rtf_budget": 0.25}
    (run / "bench.json").write_text(json.dumps({
        "model": "qat-int8.onnx", "precision": "int8", "file_bytes": 16000, "labels": 3,
        "machine": {"processor": "x86_64", "cpu_count": 2}, "device": device,
        "latency_1_thread": {"threads": 1, "p50_ms": 1.1, "p99_ms": 1.9},
        "latency_device_threads": {"threads": 3, "p50_ms": 0.8, "p99_ms": 1.4},
        "stream": {"real_time_factor": 0.03},
        "checks": [
            {"budget": "model_size", "value": 15.6, "limit": 1024, "unit": "kB", "passed": True},
            {"budget": "latency", "value": 1.4, "limit": 20.0, "unit": "ms p99", "passed": True},
            {"budget": "real_time", "value": 0.03, "limit": 0.25, "unit": "x real time",
             "passed": True},
            {"budget": "memory", "value": 350, "limit": 300, "unit": "MB peak RSS",
             "passed": False}],
        "passed": False}))
    truth = [{"label": LABELS[i % 3], "onset_s": 2.0 + 4 * i, "offset_s": 2.8 + 4 * i}
             for i in range(40)]
    dets = [{"time_s": w["offset_s"] + 0.2, "label": w["label"] if i % 7 else "mid",
             "confidence": 0.9} for i, w in enumerate(truth) if i % 5]
    (run / "stream.json").write_text(json.dumps({"words": 40, "correct_pct": 70.0,
                                                 "detections": dets, "truth": truth}))
    return run


def test_report_embeds_every_plot(cli, run_dir):
    res = _invoke(cli, ["report", str(run_dir), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    out = run_dir / "report"
    names = {p["name"] for p in summary["plots"]}
    assert names == {"size_accuracy", "training", "confusion_before", "confusion_after", "recall",
                     "bench", "stream_timeline"}
    assert json.loads((out / "report.json").read_text())["plots"] == summary["plots"]
    page = (out / "report.html").read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == len(names)
    for data in embedded:
        _assert_real_png(base64.b64decode(data))
    for p in summary["plots"]:
        _assert_real_png((out / p["file"]).read_bytes())
    # only the checkpoints this run lacks are listed as missing, each with its command
    assert {m["file"] for m in summary["missing"]} == {"pruned.pt", "qat.pt"}
    assert "edgetune compress" in page and "raspberry-pi-4" in page


def test_report_of_sparse_run_lists_what_is_missing(cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 1.0,
                                               "train_accuracy": 0.5, "val_accuracy": 0.6}) + "\n")
    # stream-eval's own shape: `detections` a count, the list in `detection_list`, truth a CSV path
    (tmp_path / "s.csv").write_text("label,onset_s,offset_s\nlow,1.0,1.6\nhigh,5.0,5.5\n")
    (run / "stream.json").write_text(json.dumps({
        "words": 2, "detections": 1, "truth": str(tmp_path / "s.csv"),
        "detection_list": [{"time_s": 1.9, "label": "low", "confidence": 0.8}]}))
    out = tmp_path / "elsewhere"
    res = _invoke(cli, ["report", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "missing  stages.json" in res.output and "edgetune compress" in res.output
    assert sorted(p.name for p in out.glob("*.png")) == ["stream_timeline.png", "training.png"]
    assert len(re.findall(r"data:image/png;base64,", (out / "report.html").read_text())) == 2


def test_report_user_errors(cli, tmp_path):
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "error: " in res.output and "no such run folder" in res.output
    run = tmp_path / "bad"
    run.mkdir()
    (run / "verify.json").write_text("{not json")
    res = CliRunner().invoke(cli, ["report", str(run)])
    assert res.exit_code == 1 and "verify.json" in res.output and "Traceback" not in res.output
    assert not (run / "report").exists()  # a failed report writes nothing


@pytest.fixture(scope="module")
def clip_wav(tmp_path_factory):
    t = np.arange(16000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 900 * t) * ((t > 0.3) & (t < 0.7))).astype(np.float32)
    path = tmp_path_factory.mktemp("clip") / "mid.wav"
    write_audio(path, audio, 16000)
    return path


def _check_explain(cli, model, clip, out, top):
    res = _invoke(cli, ["explain", str(model), str(clip), "--out", str(out), "--top", str(top),
                        "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output.strip().splitlines()[-1])
    assert len(r["top"]) == top and {t["label"] for t in r["top"]} <= set(LABELS)
    probs = [t["probability"] for t in r["top"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-5
    _assert_real_png(out.read_bytes(), min_side=300)
    return r


def test_explain_checkpoint_and_onnx(cli, ckpt_path, clip_wav, tmp_path):
    from edgetune.export import metadata, to_onnx
    from edgetune.train.checkpoint import load_checkpoint, model_from_checkpoint

    r = _check_explain(cli, ckpt_path, clip_wav, tmp_path / "pt.png", 2)
    assert r["method"] == "gradient"
    ckpt = load_checkpoint(ckpt_path)
    onnx_path = tmp_path / "m.onnx"
    to_onnx(model_from_checkpoint(ckpt).eval(), FrontEnd(), onnx_path,
            metadata(ckpt, "fp32", []))
    r = _check_explain(cli, onnx_path, clip_wav, tmp_path / "onnx.png", 3)
    assert r["method"] == "occlusion"
    res = CliRunner().invoke(cli, ["explain", str(onnx_path), str(clip_wav), "--out",
                                   str(tmp_path / "x.png")])
    assert res.exit_code == 0 and "saliency (occlusion)" in res.output


def test_explain_user_errors(cli, clip_wav, tmp_path):
    res = CliRunner().invoke(cli, ["explain", str(tmp_path / "m.pt"), str(clip_wav)])
    assert res.exit_code == 1 and "error: " in res.output and "no such model" in res.output
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"x")
    res = CliRunner().invoke(cli, ["explain", str(bad), str(clip_wav)])
    assert res.exit_code == 1 and ".pt checkpoint or an .onnx" in res.output
