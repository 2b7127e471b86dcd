"""edgetune.compress.prune: physical channel removal, rebuild from arch_config, budgets."""

import io
import json

import pytest
import torch
from torch import nn
from torch.export import Dim

from edgetune.compress.prune import (
    prune_model,
    step_budgets,
    step_ratios,
    step_widths,
    widths_for_ratio,
)
from edgetune.errors import ModelError
from edgetune.nets import SubSpectralNorm, count_macs, count_params, create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


X = torch.randn(4, 1, 98, 40, generator=torch.Generator().manual_seed(0))


def _model(name: str, seed: int = 0) -> nn.Module:
    """A model with data-like BN statistics and random affine terms, so activations
    keep their scale to the logits and a mis-sliced BN shows in the outputs."""
    torch.manual_seed(seed)
    model = create_model(name, 10)
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative: one batch sets the running statistics
    model.train()
    with torch.no_grad():
        model(X)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.momentum = 0.1
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.1
    return model.eval()


def _kill_odd_channels(model: nn.Module) -> nn.Module:
    """Make every odd channel of every layer contribute exactly nothing: BN and
    SSN gamma = beta = 0, and the rows of convs that feed a sum without a BN
    (BC-ResNet's f1 pointwise conv) zero. Removing those channels must leave
    the outputs unchanged."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SubSpectralNorm):
                m.bn.weight.view(-1, m.subbands)[1::2] = 0
                m.bn.bias.view(-1, m.subbands)[1::2] = 0
        for name, m in model.named_modules():
            if isinstance(m, nn.BatchNorm2d) and not name.endswith("f2_norm.bn"):
                m.weight[1::2] = 0
                m.bias[1::2] = 0
            if name.endswith("f1.3"):
                m.weight[1::2] = 0
    return model


def _rebuild(pruned: nn.Module) -> nn.Module:
    """Rebuild as a later stage does: JSON arch_config + a weights_only state dict."""
    buf = io.BytesIO()
    torch.save({k: v.clone() for k, v in pruned.state_dict().items()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    cfg = json.loads(json.dumps(pruned.arch_config))
    model = create_model(pruned.arch, 10, n_frames=98, n_mels=40, **cfg)
    model.load_state_dict(state)
    return model.eval()


@pytest.mark.parametrize("name,criterion", [
    ("dscnn-s", "l2"), ("dscnn-s", "bn_scale"), ("bcresnet-1", "l2"), ("bcresnet-1", "bn_scale"),
    ("bcresnet-3", "l2"),
])
def test_ratio_half_prunes_and_rebuilds(name, criterion):
    model = _model(name)
    before = count_params(model)
    with torch.no_grad():
        y0 = model(X)
    pruned = prune_model(model, X, ratio=0.5, criterion=criterion)
    after = count_params(pruned)
    assert after <= before / 2.4, (before, after)
    assert count_macs(pruned) < count_macs(model) / 2.4
    assert pruned.arch_config["channels"] == [c // 2 for c in model.arch_config["channels"]]
    assert pruned.classifier.out_features == 10
    assert pruned.pruning["params_after"] == after and pruned.pruning["params_before"] == before
    with torch.no_grad():
        y = pruned(X)
        assert y.shape == (4, 10)
        torch.testing.assert_close(_rebuild(pruned)(X), y, rtol=0, atol=0)
        torch.testing.assert_close(model(X), y0, rtol=0, atol=0)  # the original is untouched
    for m in pruned.modules():
        if isinstance(m, SubSpectralNorm):
            assert m.bn.num_features == m.channels * m.subbands


@pytest.mark.parametrize("name", ["dscnn-s", "bcresnet-1"])
def test_removes_exactly_the_dead_channels(name):
    """bn_scale ranks the dead (odd) channels last in every coupled group: removing
    them, through depthwise convs, residual and broadcast sums and SubSpectralNorm,
    must not change a single output."""
    model = _kill_odd_channels(_model(name, seed=3))
    with torch.no_grad():
        y0, e0 = model(X), model.features(X)
    assert e0[:, 0::2].abs().mean() > 0.1  # activations reach the embedding: a real check
    pruned = prune_model(model, X, ratio=0.5, criterion="bn_scale")
    with torch.no_grad():
        torch.testing.assert_close(pruned.features(X), e0[:, 0::2], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(pruned(X), y0, rtol=1e-4, atol=1e-5)
    # and what was removed really was the odd channels: the kept BN gammas are all non-zero
    for m in pruned.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert (m.weight != 0).all()


def test_pruned_model_exports_strict():
    pruned = prune_model(_model("bcresnet-1"), X, ratio=0.3)
    ep = torch.export.export(pruned, (X[:2],), dynamic_shapes={"x": {0: Dim("batch")}},
                             strict=True)
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(X), pruned(X))


@pytest.mark.parametrize("name", ["dscnn-s", "bcresnet-1"])
def test_budget_lands_under(name):
    model = _model(name)
    p0, m0 = count_params(model), count_macs(model)
    for kwargs in ({"target_params": p0 // 3}, {"target_params": int(p0 * 0.6),
                                                 "target_macs": int(m0 * 0.4)}):
        pruned = prune_model(model, X, **kwargs)
        p, m = count_params(pruned), count_macs(pruned)
        assert p <= kwargs["target_params"]
        if "target_macs" in kwargs:
            assert m <= kwargs["target_macs"]
        # the least pruning that fits: slightly wider widths would not fit
        r = pruned.pruning["ratio"]
        assert 0 < r < 1
        wider = widths_for_ratio(model.arch_config["channels"], r - 0.02)
        looser = create_model(name, 10, **{**model.arch_config, "channels": wider})
        assert (count_params(looser) > kwargs["target_params"]
                or count_macs(looser) > kwargs.get("target_macs", float("inf")))


def test_budget_already_met_and_out_of_reach():
    model = _model("dscnn-s")
    same = prune_model(model, X, target_params=10**9)
    assert same.arch_config == model.arch_config and same is not model
    with pytest.raises(ModelError, match="out of reach"):
        prune_model(model, X, target_params=100)
    with pytest.raises(ModelError):
        prune_model(model, X)  # neither ratio nor budget
    with pytest.raises(ModelError):
        prune_model(model, X, ratio=0.5, criterion="random")


def test_steps_round_to_and_inplace():
    model = _model("bcresnet-1").train()
    bn = model.blocks[0][1]
    stats = bn.running_mean.clone()
    pruned = prune_model(model, X, ratio=0.4, steps=3, round_to=2, criterion="bn_scale",
                         inplace=True)
    assert pruned is model and model.training  # mode kept
    assert all(c % 2 == 0 for c in pruned.arch_config["channels"])
    assert pruned.arch_config["channels"] == widths_for_ratio([16, 8, 12, 16, 20, 32], 0.4,
                                                              round_to=2)
    # tracing ran in eval mode: surviving BN statistics were not updated
    kept = pruned.blocks[0][1].running_mean
    assert all(any(torch.isclose(v, stats).tolist()) for v in kept)
    with torch.no_grad():
        torch.testing.assert_close(_rebuild(pruned)(X), pruned.eval()(X), rtol=0, atol=0)


def test_a_budget_with_round_to_is_filled_from_the_input_side():
    model = _model("dscnn-s")
    channels = model.arch_config["channels"]
    floor = count_params(prune_model(model, X, ratio=0.25, round_to=8))  # 64 -> 48 everywhere
    budget = floor + 6000  # room for some layers at 56, not all
    pruned = prune_model(model, X, target_params=budget, round_to=8)
    widths = pruned.arch_config["channels"]
    assert floor < count_params(pruned) <= budget
    assert all(w % 8 == 0 and w <= c for w, c in zip(widths, channels))
    assert widths[0] > 48  # widened from the input side first
    for i, (w, c) in enumerate(zip(widths, channels)):  # and no layer has room for one more step
        if w < c:
            wider = create_model("dscnn-s", 10, channels=widths[:i] + [w + 8] + widths[i + 1:])
            assert count_params(wider) > budget


def test_step_widths_walks_to_the_widths_asked_for():
    assert step_widths([64, 64, 32], [32, 64, 16], 1) == [[32, 64, 16]]
    # between steps: linear, rounded up to the kernels' multiple; the last is exact
    assert step_widths([64, 64, 32], [24, 64, 16], 2, round_to=16) == [[48, 64, 32], [24, 64, 16]]
    with pytest.raises(ModelError, match="one width per layer"):
        step_widths([64, 64], [32], 1)
    with pytest.raises(ModelError, match="each 1..now"):
        step_widths([64, 64], [32, 80], 1)


def test_iterative_schedule_helpers():
    rs = step_ratios(0.5, 4)
    keep = 1.0
    for r in rs:
        keep *= 1 - r
    assert keep == pytest.approx(0.5)
    b = step_budgets(20000, 5000, 3)
    assert b[-1] == 5000 and b[0] < 20000 and b == sorted(b, reverse=True)
    # a prune -> (fine-tune) -> prune loop on the same model keeps rebuilding exactly
    model = _model("bcresnet-1")
    for r in step_ratios(0.5, 2):
        model = prune_model(model, X, ratio=r)
    with torch.no_grad():
        torch.testing.assert_close(_rebuild(model)(X), model(X), rtol=0, atol=0)
    assert count_params(model) < count_params(_model("bcresnet-1")) / 2
