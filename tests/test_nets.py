"""edgetune.nets: published sizes, structure, config round trip, strict export."""

import json

import pytest
import torch
from torch import nn
from torch.export import Dim

from edgetune.errors import ModelError
from edgetune.nets import (
    SubSpectralNorm,
    available_models,
    count_macs,
    count_params,
    create_model,
    describe,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


ALL = ["dscnn-s", "dscnn-m", "dscnn-l", "bcresnet-1", "bcresnet-2", "bcresnet-3", "bcresnet-8"]

# Hello Edge / ML-KWS-for-MCU model_size_info (S 64 ch, M 172, L 276) and the
# BC-ResNet paper (Kim et al. 2021, table 2: 40 mels, 12 classes).
PUBLISHED = {
    "dscnn-s": 24_000, "dscnn-m": 140_000, "dscnn-l": 420_000,
    "bcresnet-1": 9_200, "bcresnet-2": 27_300, "bcresnet-3": 54_200, "bcresnet-8": 321_000,
}


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Data-like BN statistics (one train-mode batch) and random affine terms."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 1, model.n_frames, model.n_mels, generator=g)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=g) * 0.1
    return model.eval()


def test_registry():
    assert available_models() == ALL + ["sembed"]  # sembed: tests/test_sembed.py (its own front end)
    text = describe()
    for name in available_models():
        assert name in text


@pytest.mark.parametrize("name", ALL)
def test_params_match_published(name):
    n = count_params(create_model(name, 12))
    assert abs(n - PUBLISHED[name]) <= 0.10 * PUBLISHED[name], (name, n)


def test_macs_counted_by_hand():
    # dscnn-s on 98x40: stem 49x20x64 outputs x 10x4 taps; 4 x (dw 3x3 + pw 64x64); fc 64x12
    stem = 49 * 20 * 64 * 40
    ds = 49 * 20 * 64 * 9 + 49 * 20 * 64 * 64
    assert count_macs(create_model("dscnn-s", 12), (1, 1, 98, 40)) == stem + 4 * ds + 64 * 12
    assert count_macs(create_model("dscnn-s", 12), (2, 1, 98, 40)) == 2 * (stem + 4 * ds + 64 * 12)


@pytest.mark.parametrize("name", ALL)
def test_structure_and_forward(name):
    torch.manual_seed(0)
    model = _randomize_bn(create_model(name, 7)).eval()
    assert model.arch == name
    assert isinstance(model.classifier, nn.Linear) and model.classifier.out_features == 7
    assert isinstance(model.blocks, nn.ModuleList) and len(model.blocks) >= 5
    x = torch.randn(3, 1, 98, 40)
    with torch.no_grad():
        y = model(x)
        emb = model.features(x)
    assert y.shape == (3, 7)
    assert emb.shape == (3, model.classifier.in_features)
    torch.testing.assert_close(model.classifier(emb), y)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["dscnn-s", "bcresnet-1", "bcresnet-3"])
def test_other_front_ends(name):
    # music front ends: more mel bands, other frame counts; SSN picks sub-bands that divide
    for frames, mels in [(101, 64), (63, 128), (98, 32)]:
        model = create_model(name, 5, n_frames=frames, n_mels=mels).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 1, frames, mels)).shape == (2, 5)


@pytest.mark.parametrize("name", ALL)
def test_arch_config_round_trip(name):
    torch.manual_seed(1)
    model = _randomize_bn(create_model(name, 4)).eval()
    cfg = json.loads(json.dumps(model.arch_config))
    assert not {"n_classes", "n_frames", "n_mels"} & set(cfg)
    rebuilt = create_model(name, n_classes=4, n_frames=98, n_mels=40, **cfg).eval()
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.arch_config == model.arch_config
    x = torch.randn(2, 1, 98, 40)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["dscnn-s", "bcresnet-1"])
def test_cmn_ignores_a_constant_per_band(name):
    # a microphone's colouring adds a constant to each log-mel band: with cmn the model
    # answers the same; without it, it does not
    torch.manual_seed(2)
    x = torch.randn(2, 1, 98, 40)
    colour = torch.linspace(-3.0, 2.0, 40)[None, None, None, :]
    with_cmn = _randomize_bn(create_model(name, 5, cmn=True))
    plain = _randomize_bn(create_model(name, 5))
    with torch.no_grad():
        torch.testing.assert_close(with_cmn(x + colour), with_cmn(x), rtol=0, atol=1e-5)
        assert (plain(x + colour) - plain(x)).abs().max() > 1e-2
    assert with_cmn.arch_config["cmn"] is True and plain.arch_config["cmn"] is False


def test_checkpoints_from_before_cmn_rebuild_without_it():
    cfg = create_model("dscnn-s", 3).arch_config
    del cfg["cmn"]  # an arch_config written before the option existed
    assert create_model("dscnn-s", 3, **cfg).arch_config["cmn"] is False


def test_custom_widths_build():
    m = create_model("bcresnet-1", 3, channels=[5, 3, 7, 2, 9, 11])
    assert m.arch_config["channels"] == [5, 3, 7, 2, 9, 11]
    assert m(torch.randn(1, 1, 98, 40)).shape == (1, 3)
    m = create_model("dscnn-s", 3, channels=[10, 20, 30, 40, 50])
    assert m.arch_config["channels"] == [10, 20, 30, 40, 50]
    assert m(torch.randn(1, 1, 98, 40)).shape == (1, 3)


def test_create_model_errors():
    with pytest.raises(ModelError, match="unknown model"):
        create_model("resnet-50", 10)
    with pytest.raises(ModelError, match="unknown arch_config"):
        create_model("dscnn-s", 10, width=3)
    with pytest.raises(ModelError):
        create_model("bcresnet-1", 10, channels=[1, 2, 3])


def test_ssn_is_per_band():
    ssn = SubSpectralNorm(3, 5).eval()
    ssn.bn.weight.data = torch.arange(15, dtype=torch.float32)
    x = torch.ones(1, 3, 20, 4)
    y = ssn(x)
    scale, shift = ssn.affine()
    # channel 1, band 2 (frequency bins 8..11) uses BN entry 1*5+2
    assert torch.allclose(y[0, 1, 8:12], x[0, 1, 8:12] * scale[1, 2] + shift[1, 2])
    assert scale.shape == (3, 5)


# The wider BC-ResNets trace the same graph as bcresnet-1 (only widths differ)
# and take 5-10 s each to export: they run with `-m slow`.
@pytest.mark.parametrize("name", [
    "dscnn-s", "dscnn-m", "dscnn-l", "bcresnet-1",
    *(pytest.param(n, marks=pytest.mark.slow) for n in ("bcresnet-2", "bcresnet-3", "bcresnet-8")),
])
def test_torch_export_strict(name):
    model = create_model(name, 6).eval()
    x = torch.randn(2, 1, 98, 40)
    ep = torch.export.export(model, (x,), dynamic_shapes={"x": {0: Dim("batch")}}, strict=True)
    x5 = torch.randn(5, 1, 98, 40)
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x5), model(x5))
