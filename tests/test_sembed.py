"""The speech-embedding net (nets/sembed.py): shapes, a frozen trunk, convolution in time."""

from pathlib import Path

import pytest
import torch

from edgetune.errors import EdgetuneError, ModelError
from edgetune.frontend import FrontEnd
from edgetune.nets import create_model, frontend_preset
from edgetune.nets.sembed import EMBED_DIM, FRAME_STRIDE, WINDOW_FRAMES, n_windows

FE = FrontEnd.preset("sembed")
SHIPPED = Path(__file__).resolve().parents[1] / "models" / "sembed.pt"


def net(n_classes=5, **config):
    torch.manual_seed(0)
    return create_model("sembed", n_classes, FE.n_frames, FE.n_mels, **config)


def test_one_second_gives_three_embeddings_and_logits():
    model = net().eval()
    x = torch.randn(2, 1, FE.n_frames, FE.n_mels) - 10
    assert n_windows(FE.n_frames) == 3
    assert model.embeddings(x).shape == (2, 3, EMBED_DIM)
    assert model(x).shape == (2, 5)
    assert frontend_preset("sembed") == "sembed" and frontend_preset("dscnn-s") == "speech"


def test_the_trunk_is_convolutional_in_time_with_stride_8():
    """One pass over a long input equals the trunk run on each 76-frame window 8 frames apart
    (how openWakeWord runs it), so a clip of any length needs no windowing code."""
    model = net().eval()
    x = torch.randn(1, 1, WINDOW_FRAMES + 3 * FRAME_STRIDE, FE.n_mels) - 10
    with torch.no_grad():
        whole = model.embeddings(x)[0]
        each = [model.embeddings(x[:, :, i * FRAME_STRIDE: i * FRAME_STRIDE + WINDOW_FRAMES])[0, 0]
                for i in range(4)]
    assert whole.shape == (4, EMBED_DIM)
    assert torch.allclose(whole, torch.stack(each), atol=1e-5)


@pytest.mark.parametrize("edge", ["first", "last"])
def test_a_word_at_either_edge_of_the_clip_reaches_the_head(edge):
    """Unpadded, a 98-frame clip gives windows over frames 0-91 only, so a word's last sounds
    in the final 60 ms were never heard; padded (the default), every frame counts, and a
    word in the first 0.2 s is seen by as many positions as one in the middle."""
    from edgetune.train.checkpoint import load_checkpoint

    trunk = {k: v for k, v in load_checkpoint(SHIPPED)["state_dict"].items() if k.startswith("blocks.")}
    padded, unpadded = net(), net(pad_frames=0)
    for model in (padded, unpadded):  # Google's trunk: a random one passes next to nothing on
        model.load_state_dict(trunk, strict=False)
        model.eval()
    frames = slice(0, 4) if edge == "first" else slice(FE.n_frames - 4, FE.n_frames)
    x = torch.randn(1, 1, FE.n_frames, FE.n_mels) - 10
    louder = x.clone()
    louder[:, :, frames] += 6.0
    with torch.no_grad():
        assert not torch.allclose(padded(x), padded(louder))
        if edge == "last":
            assert torch.equal(unpadded(x), unpadded(louder))
    assert padded.arch_config["pad_frames"] == 24 and padded.arch_config["context_windows"] == 3
    assert n_windows(FE.n_frames + 2 * 24) == 9


def test_a_frozen_trunk_does_not_move_in_training_but_the_head_does():
    model = net()
    trunk_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(("blocks.6", "classifier"))}
    head_before = model.classifier.weight.clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 1, FE.n_frames, FE.n_mels) - 10),
                                                 torch.randint(0, 5, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in trunk_before.items())  # weights and BN statistics
    assert not torch.equal(head_before, model.classifier.weight)


def test_an_unfrozen_trunk_trains():
    model = net(freeze_trunk=False)
    assert all(p.requires_grad for p in model.parameters())
    assert model.arch_config["freeze_trunk"] is False


def test_wrong_inputs_are_refused_with_the_reason():
    with pytest.raises(ModelError, match="32 mel bands"):
        create_model("sembed", 5, 98, 40)
    with pytest.raises(ModelError, match="20 frames padded by 24 give 0 embeddings"):
        create_model("sembed", 5, 20, 32)
    with pytest.raises(ModelError, match="absolute log-mel"):
        create_model("sembed", 5, 98, 32, cmn=True)


def test_pruning_the_fixed_trunk_is_refused_with_the_fix():
    from edgetune.compress.prune import prune_model

    with pytest.raises(ModelError, match="--ratio 0"):
        prune_model(net(), (1, 1, FE.n_frames, FE.n_mels), ratio=0.3)


def test_training_sembed_from_random_weights_is_refused(tmp_path):
    from edgetune.train.finetune import fresh_model

    with pytest.raises(EdgetuneError, match="--base models/sembed.pt"):
        fresh_model("sembed", ["a", "b"], FE)


def test_int8_export_runs_every_conv_in_int8(tmp_path):
    """Every conv of the trunk feeds a float op (the leaky floor); without a quantized output
    after each, onnxruntime ran them all in float and the int8 export was refused."""
    from edgetune.compress.qat import calibrate, convert, prepare_qat
    from edgetune.export import optimized_ops, to_onnx

    model = net().eval()
    qat = calibrate(prepare_qat(model, FE.n_frames, FE.n_mels), torch.randn(4, 1, FE.n_frames, FE.n_mels) - 8)
    path = tmp_path / "sembed-int8.onnx"
    to_onnx(convert(qat), FE, path, {})
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    assert optimized_ops(path)["QLinearConv"] == n_convs == 20 + 2  # the trunk's, the head's


@pytest.mark.slow
def test_finetune_compress_export_verify_from_a_sembed_base(tmp_path):
    """The chain a user runs with models/sembed.pt, on tiny tone data (a random trunk stands in
    for Google's: the file is not needed): the trunk comes through fine-tuning unchanged, the
    masks are off, and the int8 file runs every conv in int8. About 2 minutes on 2 cores."""
    import json

    from click.testing import CliRunner
    from conftest import make_tone_dataset

    from edgetune.cli import cli
    from edgetune.train.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint

    def run(*args):
        r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return json.loads(r.output.strip().splitlines()[-1])

    data = make_tone_dataset(tmp_path / "data", clips_per_speaker=2)
    base = tmp_path / "sembed.pt"
    save_checkpoint(make_checkpoint(net(3), labels=["x", "y", "z"], frontend=FE, stage="base"), base)
    run("finetune", "--data", data, "--base", base, "--out", tmp_path / "r", "--epochs", 2, "--json")
    tuned = load_checkpoint(tmp_path / "r" / "finetuned.pt")
    before = load_checkpoint(base)["state_dict"]
    assert all(torch.equal(before[k], v) for k, v in tuned["state_dict"].items() if k.startswith("blocks.0."))
    assert tuned["meta"]["recipe"]["augment"]["freq_masks"] == tuned["meta"]["recipe"]["augment"]["time_masks"] == 0
    assert tuned["frontend"]["mel_scale"] == "slaney"
    # no --ratio: a fixed trunk is compressed to int8 without pruning
    compressed = run("compress", tmp_path / "r" / "finetuned.pt", "--qat-epochs", 1, "--json")
    params = {row["stage"]: row["params"] for row in compressed["stages"]}
    assert params["finetuned"] == params["pruned"]
    int8 = run("export", "--onnx", tmp_path / "r" / "qat.pt", "--json")
    assert int8["precision"] == "int8" and int8["int8_convs"] == 22 and int8["parity"]["passed"]
    verified = run("verify", int8["onnx"], "--data", data, "--split", "val", "--min-accuracy", 0, "--json")
    assert verified["n"] > 0
