"""`edgetune merge`: exact trunk sharing, distillation into one trunk, and the multi-head
checkpoint and ONNX contracts, on tiny tone data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_tone_dataset

from edgetune.cli import cli
from edgetune.train.checkpoint import load_checkpoint, model_from_checkpoint

LOW = {"low": 300.0, "mid": 900.0}
HIGH = {"bright": 2500.0, "shrill": 4000.0, "top": 6000.0}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def models(tmp_path_factory, one_torch_thread):
    """A base, then two tasks fine-tuned from it with the stem and first block frozen; the
    second keeps its band means (as a vowels model does), the first removes them."""
    root = tmp_path_factory.mktemp("merge")
    low = make_tone_dataset(root / "low", clips_per_speaker=2, labels=LOW)
    high = make_tone_dataset(root / "high", clips_per_speaker=2, seed=1, labels=HIGH)
    r = invoke("finetune", "--data", low, "--model", "dscnn-s", "--out", root / "base", "--epochs", 2,
               "--batch-size", 16, "--json")
    assert r.exit_code == 0, r.output
    for name, data, cmn in (("low", low, "--cmn"), ("high", high, "--no-cmn")):
        r = invoke("finetune", "--data", data, "--base", root / "base" / "finetuned.pt", "--out", root / name,
                   "--epochs", 3, "--batch-size", 16, "--lr", 1e-2, "--freeze", 2, cmn, "--no-personal", "--json")
        assert r.exit_code == 0, r.output
    return root


@pytest.fixture(scope="module")
def exact(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("exact")
    r = invoke("merge", models / "low" / "finetuned.pt", models / "high" / "finetuned.pt",
               "--out", out / "merged.pt", "--json")
    assert r.exit_code == 0, r.output
    return out, last_json(r.output)


def test_exact_merge_shares_frozen_blocks_and_keeps_every_answer(models, exact):
    tmp_path, result = exact
    assert result["how"] == "exact" and result["shared_blocks"] == 2 and result["heads"] == ["low", "high"]
    assert result["params"] < result["params_separate"]
    assert result["test_accuracy"] == result["own_model_test_accuracy"]
    assert result["trunk_passes"] == 2  # one per input normalisation

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
               "--out", out / "merged.pt", "--distill", "--epochs", 2, "--batch-size", 16, "--distill-alpha", 0.8,
               "--json")
    assert r.exit_code == 0, r.output
    return out, last_json(r.output)


def test_distilled_merge_has_one_trunk(distilled):
    _, result = distilled
    assert result["how"] == "distilled" and result["shared_blocks"] == 5  # stem + 4 DS blocks
    assert result["params"] * 1.8 < result["params_separate"]
    assert set(result["test_accuracy"]) == {"low", "high"}


def test_distilled_merge_records_its_training_recipe(distilled):
    out, _ = distilled
    train = load_checkpoint(out / "merged.pt")["meta"]["recipe"]["train"]
    assert train["distill_alpha"] == 0.8 and train["epochs"] == 2
    epochs = [json.loads(line) for line in (out / "merge-log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2] and all(0 <= e["val_accuracy"] <= 1 for e in epochs)


def test_distilled_student_shares_the_averaged_trunk_and_starts_each_head_from_its_teacher(models):
    from edgetune.frontend import FrontEnd
    from edgetune.train.merge import distil_student

    ckpts = [load_checkpoint(models / n / "finetuned.pt") for n in ("low", "high")]
    student = distil_student(ckpts, ["low", "high"], FrontEnd.from_dict(ckpts[0]["frontend"]), shared=3)
    low, high = student.nets
    assert student.shared == 3 and all(low.blocks[j] is high.blocks[j] for j in range(3))
    assert low.blocks[3] is not high.blocks[3]
    for net, ckpt in ((low, ckpts[0]), (high, ckpts[1])):
        state = net.state_dict()
        for k in ("blocks.3.pw.weight", "blocks.4.pw.weight", "classifier.weight"):
            assert torch.equal(state[k], ckpt["state_dict"][k]), k
        averaged = (ckpts[0]["state_dict"]["blocks.2.pw.weight"] + ckpts[1]["state_dict"]["blocks.2.pw.weight"]) / 2
        assert torch.allclose(state["blocks.2.pw.weight"], averaged)


def test_heads_that_differ_in_band_means_get_their_own_trunk_input():
    from edgetune.nets import create_model
    from edgetune.train.merge import head_inputs

    words, held = {"arch_config": {"cmn": True}}, {"arch_config": {"cmn": False}}
    old = {"arch_config": {}}  # from before the choice existed: off
    assert head_inputs([words, words]) is None and head_inputs([held, old]) is None
    assert head_inputs([words, held]) == [True, False]

    torch.manual_seed(0)
    config = {"base": "dscnn-s", "base_config": {}, "shared": 5, "heads": [["w", 3], ["v", 2]],
              "channels": [16] * 5}
    same = create_model("multihead", 5, **config)
    assert "head_cmn" not in same.arch_config  # a merge whose heads agree is as before
    apart = create_model("multihead", 5, **config, head_cmn=[True, False])
    assert apart.arch_config["head_cmn"] == [True, False]
    apart.load_state_dict(same.state_dict())
    x = torch.randn(2, 1, 98, 40) + torch.linspace(0, 3, 40)  # bands with different means
    with_cmn, without = (create_model("dscnn-s", n, channels=[16] * 5, cmn=c) for n, c in ((3, True), (2, False)))
    with_cmn.load_state_dict(apart.nets[0].state_dict())
    without.load_state_dict(apart.nets[1].state_dict())
    for m in (apart, with_cmn, without):
        m.eval()
    with torch.no_grad():
        assert torch.allclose(apart(x), torch.cat([with_cmn(x), without(x)], 1), atol=1e-5)
    assert [net.arch_config["cmn"] for net in apart.nets] == [True, False]


def test_heads_branch_off_at_their_own_depths():
    """shared=[2, 3, 3]: blocks 0-1 are one module for all; block 2 one module for the last
    two heads; each head's own blocks after. The merged output is each head's net run
    alone, the checkpoint rebuilds it exactly, and pruning keeps that true."""
    from edgetune.compress.prune import count_params, prune_model
    from edgetune.nets import create_model

    torch.manual_seed(0)
    heads = [["w", 3], ["d", 4], ["v", 2]]
    tree = create_model("multihead", 9, base="dscnn-s", base_config={}, shared=[2, 3, 3], heads=heads,
                        channels=[16, 16, 16, 24, 24, 24, 16, 16, 16, 16], head_cmn=[True, True, False]).eval()
    w, d, v = tree.nets
    assert w.blocks[1] is d.blocks[1] is v.blocks[1] and d.blocks[2] is v.blocks[2]
    assert w.blocks[2] is not d.blocks[2] and d.blocks[3] is not v.blocks[3]
    assert tree.arch_config["shared"] == [2, 3, 3] and len(tree.blocks) == 2
    assert [net.arch_config["channels"] for net in tree.nets] == [
        [16, 16, 24, 24, 24], [16, 16, 16, 16, 16], [16, 16, 16, 16, 16]]
    x = torch.randn(2, 1, 98, 40) + torch.linspace(0, 3, 40)
    with torch.no_grad():
        assert torch.allclose(tree(x), torch.cat([net(x) for net in tree.nets], 1), atol=1e-5)
        rebuilt = create_model("multihead", 9, **tree.arch_config)
        rebuilt.load_state_dict(tree.state_dict())
        assert torch.equal(rebuilt.eval()(x), tree(x))
    separate = sum(count_params(net) for net in tree.nets)
    assert count_params(tree) < separate
    pruned = prune_model(tree, x, target_params=count_params(tree) - 1500, round_to=8).eval()
    assert count_params(pruned) <= count_params(tree) - 1500
    with torch.no_grad():
        assert torch.allclose(pruned(x), torch.cat([net(x) for net in pruned.nets], 1), atol=1e-5)


def test_distilled_tree_averages_each_block_over_the_heads_that_share_it(models):
    from edgetune.frontend import FrontEnd
    from edgetune.train.merge import distil_student

    ckpts = [load_checkpoint(models / n / "finetuned.pt") for n in ("low", "high", "low")]
    student = distil_student(ckpts, ["a", "b", "c"], FrontEnd.from_dict(ckpts[0]["frontend"]), shared=[2, 4, 4])
    a, b, c = (net.state_dict() for net in student.nets)
    low, high = ckpts[0]["state_dict"], ckpts[1]["state_dict"]
    assert torch.allclose(a["blocks.1.pw.weight"], (2 * low["blocks.1.pw.weight"] + high["blocks.1.pw.weight"]) / 3)
    assert torch.allclose(b["blocks.3.pw.weight"], (high["blocks.3.pw.weight"] + low["blocks.3.pw.weight"]) / 2)
    assert torch.equal(a["blocks.3.pw.weight"], low["blocks.3.pw.weight"])  # its own, from its teacher
    assert torch.equal(c["blocks.4.pw.weight"], low["blocks.4.pw.weight"])

    # --trunk-from b: the blocks b shares come from its teacher alone, so b starts as its own model
    led = distil_student(ckpts, ["a", "b", "c"], FrontEnd.from_dict(ckpts[0]["frontend"]), shared=[2, 4, 4],
                         trunk_from="b")
    a, b = (net.state_dict() for net in led.nets[:2])
    for k in ("blocks.1.pw.weight", "blocks.3.pw.weight", "blocks.4.pw.weight", "classifier.weight"):
        assert torch.equal(b[k], high[k]), k
    assert torch.equal(a["blocks.1.pw.weight"], high["blocks.1.pw.weight"])  # the shared block
    assert torch.equal(a["blocks.2.pw.weight"], low["blocks.2.pw.weight"])  # a's own block


def test_merge_prints_each_head_and_the_trunk_passes(models, tmp_path):
    r = invoke("merge", models / "low" / "finetuned.pt", models / "high" / "finetuned.pt",
               "--out", tmp_path / "m.pt")
    assert r.exit_code == 0, r.output
    assert "the trunk runs 2 times per window" in r.output
    assert "low" in r.output and "high" in r.output and "next: edgetune compress" in r.output


def test_merge_says_when_shared_does_not_apply(models, tmp_path):
    r = invoke("merge", models / "low" / "finetuned.pt", models / "high" / "finetuned.pt",
               "--out", tmp_path / "m.pt", "--shared", 3)
    assert r.exit_code != 0 and "--distill" in r.output and "Traceback" not in r.output
    r = invoke("merge", models / "low" / "finetuned.pt", models / "high" / "finetuned.pt",
               "--out", tmp_path / "m.pt", "--distill", "--shared", 9)
    assert r.exit_code != 0 and "share 1 to 5" in r.output
    r = invoke("merge", models / "low" / "finetuned.pt", models / "high" / "finetuned.pt",
               "--out", tmp_path / "m.pt", "--distill", "--shared", "2,3,4")
    assert r.exit_code != 0 and "one per head (2)" in r.output and "Traceback" not in r.output
    r = invoke("merge", models / "low" / "finetuned.pt", models / "high" / "finetuned.pt",
               "--out", tmp_path / "m.pt", "--distill", "--trunk-from", "loud")
    assert r.exit_code != 0 and "no such head; heads: low, high" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "m.pt").exists()


@pytest.fixture(scope="module")
def merged_onnx(exact):
    """The exact merge (shared trunk, a block of its own per head) through compress and int8
    export: its heads are the fine-tuned models, trained enough for a stable int8 parity check."""
    out, _ = exact
    r = invoke("compress", out / "merged.pt", "--steps", 1, "--epochs-per-step", 1, "--qat-epochs", 3,
               "--max-drop", 1.0, "--json")
    assert r.exit_code == 0, r.output
    r = invoke("export", "--onnx", out / "qat.pt", "--json")
    assert r.exit_code == 0, r.output
    return last_json(r.output)["onnx"]


def test_merged_model_compresses_and_exports_one_output_per_head(exact, merged_onnx):
    import onnx

    out, _ = exact
    qat = load_checkpoint(out / "qat.pt")
    assert [h["name"] for h in qat["heads"]] == ["low", "high"]
    assert qat["meta"]["recipe"]["distilled_from"] == "merged_from"  # the heads' own models
    proto = onnx.load(merged_onnx)
    assert [o.name for o in proto.graph.output] == ["logits_low", "logits_high"]
    assert not any(n.name for n in proto.graph.node)  # compact: no exporter names left
    props = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert [h["labels"] for h in props["edgetune.heads"]] == [h["labels"] for h in qat["heads"]]


def test_compress_prunes_a_merge_to_the_widths_asked_for(exact, tmp_path):
    out, _ = exact
    ckpt = load_checkpoint(out / "merged.pt")
    widths = [64, 48] + [32, 32, 16] + [48, 32, 32]  # the trunk's 2 blocks, then each head's 3
    assert len(widths) == len(ckpt["arch_config"]["channels"])
    r = invoke("compress", out / "merged.pt", "--out", tmp_path, "--widths", ",".join(map(str, widths)),
               "--steps", 1, "--epochs-per-step", 1, "--lr", 1e-3, "--qat-epochs", 0, "--qat-lr", 1e-4, "--max-drop", 1.0, "--json")
    assert r.exit_code == 0, r.output
    pruned = load_checkpoint(tmp_path / "pruned.pt")
    assert pruned["arch_config"]["channels"] == widths
    assert (pruned["meta"]["recipe"]["lr"], pruned["meta"]["recipe"]["qat_lr"]) == (1e-3, 1e-4)
    assert [h["name"] for h in pruned["heads"]] == ["low", "high"]
    r = invoke("compress", out / "merged.pt", "--out", tmp_path / "x", "--widths", "64,48", "--ratio", 0.5)
    assert r.exit_code != 0 and "without --ratio" in r.output and "Traceback" not in r.output
    r = invoke("compress", out / "merged.pt", "--out", tmp_path / "x", "--widths", "64,4x8")
    assert r.exit_code != 0 and "whole numbers" in r.output and "Traceback" not in r.output
    r = invoke("compress", out / "merged.pt", "--out", tmp_path / "x", "--widths", "64,48")
    assert r.exit_code != 0 and "one width per layer" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x").exists()


def test_device_side_runs_every_head_in_one_pass(merged_onnx, models):
    from edgetune.runtime.model import load_model
    from edgetune.runtime.stream import StreamEngine, run_stream

    rec = load_model(merged_onnx)
    assert [h.name for h in rec.heads] == ["low", "high"]
    feats = np.zeros((2, 1, 98, 40), np.float32)
    both = rec.predict_features(feats)
    assert both.shape == (2, len(rec.labels))
    low = rec.head("low")
    assert low.labels == rec.heads[0].labels
    assert np.allclose(low.predict_features(feats), both[:, : len(low.labels)])
    proba = rec.predict_proba(feats)  # a softmax per head
    assert np.allclose(proba[:, : len(low.labels)].sum(1), 1) and np.allclose(proba[:, len(low.labels):].sum(1), 1)

    from conftest import tone_clip

    rng = np.random.default_rng(0)
    audio = np.concatenate([np.zeros(8000, np.float32), tone_clip(300.0, rng), tone_clip(4000.0, rng)])
    detections = run_stream(StreamEngine(rec, threshold=0.0), audio)
    assert detections and all(d.label.split(":")[0] in ("low", "high") for d in detections)


def test_verify_scores_one_head_and_asks_which(merged_onnx, models):
    r = invoke("verify", merged_onnx, "--data", models / "high", "--head", "high", "--min-accuracy", 0, "--json")
    assert r.exit_code == 0, r.output
    assert last_json(r.output)["labels"][-1] == "top"
    r = invoke("verify", merged_onnx, "--data", models / "high")
    assert r.exit_code == 1 and "--head" in r.output


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


def test_multi_head_accuracy_weighs_heads_equally():
    from edgetune.train.loop import accuracy

    # head 0: three clips, all right; head 1: one clip, wrong -> (1 + 0) / 2, not 3 / 4
    logits = torch.tensor([[9.0, 0, 0, 0]] * 3 + [[0, 0, 9.0, 0]])
    targets = torch.tensor([0, 0, 0, 3])
    assert accuracy(logits, targets, [(0, 2), (2, 4)]) == 0.5


def test_balanced_order_gives_each_head_an_equal_share_of_the_epoch():
    from collections import Counter

    from edgetune.train.loop import balanced_order

    targets = torch.tensor([0] * 90 + [2] * 10 + [3] * 20)  # heads: columns 0-1, 2-4
    order = balanced_order(targets, [(0, 2), (2, 5)], torch.Generator().manual_seed(0))
    assert len(order) == len(targets)
    heads = Counter("big" if int(targets[i]) < 2 else "small" for i in order)
    assert heads == {"big": 60, "small": 60}
    big = [int(i) for i in order if int(targets[i]) < 2]
    assert len(set(big)) == 60  # a large task is sampled without repeats
    small = Counter(int(i) for i in order if int(targets[i]) >= 2)
    assert set(small) == set(range(90, 120)) and set(small.values()) == {2}  # each drawn twice


def test_soup_never_below_best_trial_on_validation(models, tmp_path):
    r = invoke("finetune", "--data", models / "low", "--base", models / "base" / "finetuned.pt", "--out", tmp_path,
               "--epochs", 1, "--batch-size", 16, "--auto", 3, "--soup", "--no-personal", "--json")
    assert r.exit_code == 0, r.output
    out = last_json(r.output)
    assert out["val_accuracy"] >= out["best_single_trial"]["val_accuracy"]
    assert out["soup_trials"][0] == out["chosen_trial"] and "test_accuracy" in out["best_single_trial"]
    soup = load_checkpoint(tmp_path / "finetuned.pt")
    assert len(soup["meta"]["recipe"]["soup_of"]) == len(out["soup_trials"])
    assert soup["meta"]["metrics"]["val_accuracy"] == out["val_accuracy"]


def test_soup_averages_seeded_runs_and_refuses_another_network(models, tmp_path):
    r = invoke("finetune", "--data", models / "low", "--base", models / "base" / "finetuned.pt", "--out", tmp_path,
               "--epochs", 3, "--batch-size", 16, "--lr", 1e-2, "--freeze", 2, "--cmn", "--no-personal",
               "--seed", 1, "--json")
    assert r.exit_code == 0, r.output
    runs = [models / "low" / "finetuned.pt", tmp_path / "finetuned.pt"]
    r = invoke("soup", *runs, "--out", tmp_path / "soup.pt", "--json")
    assert r.exit_code == 0, r.output
    out = last_json(r.output)
    assert out["val_accuracy"] >= max(s["val_accuracy"] for s in out["each"]) == out["best_single"]["val_accuracy"]
    soup = torch.load(tmp_path / "soup.pt", weights_only=True)
    assert [link["path"] for link in soup["meta"]["recipe"]["soup_of"]] == [str(runs[i]) for i in out["members"]]
    if out["members"] == [0, 1]:  # both kept: the weights are their mean
        states = [load_checkpoint(p)["state_dict"] for p in runs]
        w = "classifier.weight" if "classifier.weight" in states[0] else next(iter(states[0]))
        assert torch.allclose(soup["state_dict"][w], (states[0][w] + states[1][w]) / 2)
    r = invoke("soup", runs[0], models / "high" / "finetuned.pt", "--out", tmp_path / "bad.pt")
    assert r.exit_code != 0 and "high" in r.output and "differs" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "bad.pt").exists()


def test_a_soup_of_pruned_merges_keeps_its_heads_and_their_teachers(exact, merged_onnx, tmp_path):
    import shutil

    from edgetune.compress.pipeline import distillation_teacher

    out, _ = exact
    shutil.copy(out / "pruned.pt", tmp_path / "copy.pt")
    r = invoke("soup", out / "pruned.pt", tmp_path / "copy.pt", "--out", tmp_path / "soup.pt")
    assert r.exit_code == 0, r.output
    assert "low" in r.output and "high" in r.output and "--ratio 0" in r.output
    soup = load_checkpoint(tmp_path / "soup.pt")
    assert soup["heads"] == load_checkpoint(out / "pruned.pt")["heads"] and soup["meta"]["stage"] == "pruned"
    _, how = distillation_teacher(soup, model_from_checkpoint(soup), print)
    assert how == "merged_from"  # found up the lineage: soup -> merged.pt


def test_average_states_means_floats_and_keeps_counts():
    from edgetune.train.soup import average_states

    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(7)}
    avg = average_states([a, b])
    assert torch.equal(avg["w"], torch.tensor([2.0, 4.0])) and int(avg["n"]) == 5



def test_compress_distils_from_the_merged_model_when_a_teacher_changed(models, exact, tmp_path):
    import shutil

    from edgetune.compress.pipeline import distillation_teacher
    from edgetune.train.merge import Teachers

    out, _ = exact
    ckpt = load_checkpoint(out / "merged.pt")
    float_model = model_from_checkpoint(ckpt)
    teacher, how = distillation_teacher(ckpt, float_model, print)
    assert how == "merged_from" and isinstance(teacher, Teachers)
    copy = tmp_path / "low.pt"
    shutil.copy(models / "high" / "finetuned.pt", copy)  # another file at the recorded path
    ckpt["meta"]["merged_from"][0]["path"] = str(copy)
    messages = []
    teacher, how = distillation_teacher(ckpt, float_model, messages.append)
    assert how == "self" and teacher is float_model and "head low" in messages[0]


def test_merged_models_are_compressed_with_their_heads_augmentation():
    from edgetune.compress.pipeline import finetune_augment
    from edgetune.data.augment import AugmentConfig
    from edgetune.train.merge import teachers_augment

    light, default = AugmentConfig.light(), AugmentConfig()

    def ckpt(recipe):
        return {"meta": {"recipe": recipe}}

    assert teachers_augment([ckpt({"augment": light.to_dict()})] * 3) == light
    assert teachers_augment([ckpt({"augment": light.to_dict()}), ckpt({"augment": default.to_dict()})]) == default
    assert finetune_augment(ckpt({"merge": "distilled", "train": {"augment": light.to_dict()}})) == light
    assert finetune_augment(ckpt({"merge": "exact", "augment": light.to_dict()})) == light
    assert finetune_augment(ckpt({})) is None
