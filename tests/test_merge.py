"""`edgetune merge`: exact trunk sharing, distillation into one trunk, and the multi-head
checkpoint and ONNX contracts, on tiny tone data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgetune.cli import cli
from edgetune.train.checkpoint import load_checkpoint, model_from_checkpoint

from conftest import make_tone_dataset

LOW = {"low": 300.0, "mid": 900.0}
HIGH = {"bright": 2500.0, "shrill": 4000.0, "top": 6000.0}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def models(tmp_path_factory, one_torch_thread):
    """A base, then two tasks fine-tuned from it with the stem and first block frozen."""
    root = tmp_path_factory.mktemp("merge")
    low = make_tone_dataset(root / "low", clips_per_speaker=2, labels=LOW)
    high = make_tone_dataset(root / "high", clips_per_speaker=2, seed=1, labels=HIGH)
    r = invoke("finetune", "--data", low, "--model", "dscnn-s", "--out", root / "base", "--epochs", 2,
               "--batch-size", 16, "--json")
    assert r.exit_code == 0, r.output
    for name, data in (("low", low), ("high", high)):
        r = invoke("finetune", "--data", data, "--base", root / "base" / "finetuned.pt", "--out", root / name,
                   "--epochs", 3, "--batch-size", 16, "--lr", 1e-2, "--freeze", 2, "--no-personal", "--json")
        assert r.exit_code == 0, r.output
    return root


def test_exact_merge_shares_frozen_blocks_and_keeps_every_answer(models, tmp_path):
    r = invoke("merge", models / "low" / "finetuned.pt", models / "high" / "finetuned.pt",
               "--out", tmp_path / "merged.pt", "--json")
    assert r.exit_code == 0, r.output
    result = last_json(r.output)
    assert result["how"] == "exact" and result["shared_blocks"] == 2 and result["heads"] == ["low", "high"]
    assert result["params"] < result["params_separate"]
    assert result["test_accuracy"] == result["own_model_test_accuracy"]

    ckpt = torch.load(tmp_path / "merged.pt", weights_only=True)  # plain data only
    assert [h["name"] for h in ckpt["heads"]] == ["low", "high"]
    assert ckpt["labels"] == ckpt["heads"][0]["labels"] + ckpt["heads"][1]["labels"]
    merged = model_from_checkpoint(ckpt).eval()
    x = torch.randn(3, 1, 98, 40)
    own = [model_from_checkpoint(load_checkpoint(models / n / "finetuned.pt")).eval() for n in ("low", "high")]
    with torch.no_grad():
        assert torch.allclose(merged(x), torch.cat([m(x) for m in own], 1), atol=1e-5)


@pytest.fixture(scope="module")
def distilled(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("distilled")
    r = invoke("merge", models / "low" / "finetuned.pt", models / "high" / "finetuned.pt",
               "--out", out / "merged.pt", "--distill", "--epochs", 2, "--batch-size", 16, "--json")
    assert r.exit_code == 0, r.output
    return out, last_json(r.output)


def test_distilled_merge_has_one_trunk(distilled):
    out, result = distilled
    assert result["how"] == "distilled" and result["shared_blocks"] == 5  # stem + 4 DS blocks
    assert result["params"] * 1.8 < result["params_separate"]
    assert set(result["test_accuracy"]) == {"low", "high"}


def test_merged_model_compresses_and_exports_one_output_per_head(distilled):
    import onnx

    out, _ = distilled
    r = invoke("compress", out / "merged.pt", "--steps", 1, "--epochs-per-step", 1, "--qat-epochs", 1,
               "--max-drop", 1.0, "--json")
    assert r.exit_code == 0, r.output
    qat = load_checkpoint(out / "qat.pt")
    assert [h["name"] for h in qat["heads"]] == ["low", "high"]
    r = invoke("export", "--onnx", out / "qat.pt", "--json")
    assert r.exit_code == 0, r.output
    path = last_json(r.output)["onnx"]
    proto = onnx.load(path)
    assert [o.name for o in proto.graph.output] == ["logits_low", "logits_high"]
    props = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert [h["labels"] for h in props["edgetune.heads"]] == [h["labels"] for h in qat["heads"]]


def test_single_head_checkpoint_has_no_heads_entry(models):
    ckpt = load_checkpoint(models / "low" / "finetuned.pt")
    assert "heads" not in ckpt and ckpt["arch"] == "dscnn-s"


def test_merge_refuses_models_with_other_front_ends(models, tmp_path):
    ckpt = load_checkpoint(models / "high" / "finetuned.pt")
    ckpt["frontend"] = {**ckpt["frontend"], "n_mels": 64}
    torch.save(ckpt, tmp_path / "other.pt")
    r = invoke("merge", models / "low" / "finetuned.pt", tmp_path / "other.pt", "--out", tmp_path / "m.pt")
    assert r.exit_code == 1 and "different front ends" in r.output
    assert not (tmp_path / "m.pt").exists()


def test_head_accuracy_answers_each_clip_with_its_own_head():
    from edgetune.train.loop import accuracy

    logits = torch.tensor([[0.0, 9.0, 1.0, 0.0], [5.0, 0.0, 0.0, 1.0]])
    targets = torch.tensor([1, 3])  # head 0 = columns 0-1, head 1 = columns 2-3
    assert accuracy(logits, targets, [(0, 2), (2, 4)]) == 1.0
    assert accuracy(logits, targets) == 0.5
    assert np.isnan(accuracy(logits[:0], targets[:0]))
