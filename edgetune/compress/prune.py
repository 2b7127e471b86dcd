"""Structured channel pruning with Torch-Pruning (DepGraph): channels are
physically removed, and the new widths are read back into `arch_config`, so a
pruned model is rebuilt with `create_model(arch, **arch_config)` +
`load_state_dict` and never pickled.

Coupled channels are pruned together: a depthwise conv with its input, batch
norm with its conv, every tensor summed in a residual or broadcast addition
(BC-ResNet: x + f2(x) + f1(avg(f2(x))) ties a whole stage to one width), and
the input side of the classifier. The classifier's outputs (the classes) are
never pruned. SubSpectralNorm hides a reshape (C channels -> C*S batch-norm
entries) that DepGraph cannot trace, so it is a leaf with its own pruner that
removes the S entries of each pruned channel.

`prune_model` does one pruning (one shot, or `steps` importance re-estimations
without training between them). The prune -> fine-tune loop lives elsewhere;
`step_ratios` / `step_budgets` give it per-round targets.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from edgetune.errors import ModelError
from edgetune.nets import SubSpectralNorm, count_macs, count_params

CRITERIA = ("l2", "bn_scale")


class SubSpectralNormPruner(tp.pruner.BasePruningFunc):
    """Torch-Pruning handler for SubSpectralNorm: channel c owns BN entries
    c*S .. c*S+S-1 of the inner BatchNorm2d(C*S)."""

    TARGET_MODULES = (SubSpectralNorm,)

    def prune_out_channels(self, layer: SubSpectralNorm, idxs: Sequence[int]) -> nn.Module:
        s = layer.subbands
        bn_idxs = [int(i) * s + j for i in sorted({int(i) for i in idxs}) for j in range(s)]
        tp.prune_batchnorm_out_channels(layer.bn, bn_idxs)
        return layer

    prune_in_channels = prune_out_channels  # in == out: an intra-layer dependency like BN

    def get_out_channels(self, layer: SubSpectralNorm) -> int:
        return layer.channels

    get_in_channels = get_out_channels


_SSN_PRUNER = SubSpectralNormPruner()


class _SSNAware:
    """Mixin for Torch-Pruning group importances: SubSpectralNorm is a leaf the
    stock importances do not know, so add its per-channel |gamma|^p (averaged
    over sub-bands) to the group's scores, like a BatchNorm's."""

    def __call__(self, group):
        self._ssn_extra = ([], [])
        for i, (dep, idxs) in enumerate(group):
            layer = dep.layer
            if isinstance(layer, SubSpectralNorm) and layer.bn.affine \
                    and dep.pruning_fn == _SSN_PRUNER.prune_out_channels:
                w = layer.bn.weight.detach().view(-1, layer.subbands)[list(idxs)]
                self._ssn_extra[0].append(w.abs().pow(self.p).mean(1))
                self._ssn_extra[1].append(group[i].root_idxs)
        try:
            return super().__call__(group)
        finally:
            self._ssn_extra = ([], [])

    def _reduce(self, group_imp, group_idxs):
        extra_imp, extra_idxs = getattr(self, "_ssn_extra", ([], []))
        return super()._reduce(list(group_imp) + extra_imp, list(group_idxs) + extra_idxs)


class L2Importance(_SSNAware, tp.importance.MagnitudeImportance):
    """tp.importance.MagnitudeImportance(p=2), SubSpectralNorm included."""

    def __init__(self):
        super().__init__(p=2)


class BNScaleImportance(_SSNAware, tp.importance.BNScaleImportance):
    """tp.importance.BNScaleImportance (|gamma| of BN, network slimming), SSN included."""


def make_importance(criterion: str):
    if criterion == "l2":
        return L2Importance()
    if criterion == "bn_scale":
        return BNScaleImportance()
    raise ModelError(f"unknown pruning criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")


def _example(model: nn.Module, example_input: torch.Tensor | Sequence[int]) -> torch.Tensor:
    p = next(model.parameters())
    if isinstance(example_input, torch.Tensor):
        return example_input[:1].to(p.device, p.dtype)
    return torch.zeros((1, *tuple(example_input)[1:]), device=p.device, dtype=p.dtype)


def _prune_to(model: nn.Module, x: torch.Tensor, widths: list[int], criterion: str,
              steps: int) -> nn.Module:
    """Prune `model` in place so that its coupled groups have `widths` channels."""
    current = list(model.arch_config["channels"])
    ratios = {}
    for module, c, w in zip(model.width_modules(), current, widths):
        if w < c:
            # Torch-Pruning keeps int(c * (1 - r)) channels; the half channel makes that w exactly
            ratios[module] = 1.0 - (w + 0.5) / c
    if not ratios:
        return model
    was_training = model.training
    model.eval()  # tracing runs forward passes: keep BN running statistics untouched
    try:
        with torch.enable_grad():
            pruner = tp.pruner.BasePruner(
                model, x,
                importance=make_importance(criterion),
                pruning_ratio=0.0,
                pruning_ratio_dict=ratios,
                iterative_steps=int(steps),
                ignored_layers=[model.classifier],
                customized_pruners={SubSpectralNorm: _SSN_PRUNER},
                global_pruning=False,
            )
            for _ in range(int(steps)):
                pruner.step()
    finally:
        model.train(was_training)
    for p in model.parameters():
        p.grad = None
    return model


def n_outputs(model: nn.Module) -> int:
    """Classes of the model (all heads together for a multi-head model)."""
    return sum(m.out_features for m in model.classifier.modules() if isinstance(m, nn.Linear))


def _check_rebuild(model: nn.Module) -> None:
    """The pruned model's arch_config must describe exactly its modules."""
    from edgetune.nets import create_model

    rebuilt = create_model(model.arch, n_outputs(model), model.n_frames,
                           model.n_mels, **model.arch_config)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if want != got:
        diff = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        raise RuntimeError(f"pruned {model.arch} does not match its arch_config at {diff[:5]}")


def widths_for_ratio(channels: Sequence[int], ratio: float, *, round_to: int | None = None,
                     min_channels: int = 1) -> list[int]:
    """Widths left when `ratio` of every group is removed: int(c * (1 - ratio)),
    rounded down to a multiple of `round_to`, never below `min_channels` (nor
    `round_to`), never above c."""
    floor = max(1, int(min_channels), int(round_to or 1))
    out = []
    for c in channels:
        k = int(c * (1.0 - ratio))
        if round_to:
            k -= k % round_to
        out.append(min(c, max(floor, k)))
    return out


def fill_budget(widths: Sequence[int], channels: Sequence[int], step: int, fits) -> list[int]:
    """Give back, one `step` of channels at a time, what rounding down took beyond the
    budget: sweep the layers from the input side (a layer feeds every one after it; in a
    merged model the trunk feeds every head), widening each whose next step still `fits`,
    until a sweep widens nothing. Without this a budget between two multiples of `step`
    falls to the lower one in every layer at once (64 -> 48 where 56 is just too big)."""
    widths = [int(w) for w in widths]
    grown = True
    while grown:
        grown = False
        for i, c in enumerate(channels):
            wider = widths[:i] + [min(int(c), widths[i] + step)] + widths[i + 1:]
            if wider[i] > widths[i] and fits(wider):
                widths, grown = wider, True
    return widths


def has_fixed_trunk(model) -> bool:
    """sembed: Google's trunk, frozen; its channels are not ours to cut."""
    return hasattr(model, "trunk")


def _validate(model, criterion, steps):
    if has_fixed_trunk(model):
        raise ModelError(f"{model.arch}: its trunk is fixed pretrained weights, not pruned; "
                         "compress it with --ratio 0 (int8 only)")
    if not (hasattr(model, "arch") and hasattr(model, "classifier")
            and hasattr(model, "width_modules")):
        raise ModelError("pruning needs an edgetune.nets model (arch, classifier, width_modules)")
    if criterion not in CRITERIA:
        raise ModelError(f"unknown pruning criterion {criterion!r}; "
                         f"choose one of {', '.join(CRITERIA)}")
    if int(steps) < 1:
        raise ModelError(f"steps must be >= 1, got {steps}")


def prune_to_widths(
    model: nn.Module,
    example_input: torch.Tensor | Sequence[int],
    widths: Sequence[int],
    *,
    criterion: str = "l2",
    steps: int = 1,
    inplace: bool = False,
) -> nn.Module:
    """Prune `model` so that arch_config["channels"] becomes `widths` (each <= now),
    keeping the most important channels of each coupled group by `criterion`."""
    _validate(model, criterion, steps)
    current = list(model.arch_config["channels"])
    widths = [int(w) for w in widths]
    if len(widths) != len(current) or any(not 1 <= w <= c for w, c in zip(widths, current)):
        raise ModelError(f"{model.arch}: widths {widths} must be 1..current per layer {current}")
    x = _example(model, example_input)
    pruned = model if inplace else copy.deepcopy(model)
    _prune_to(pruned, x, widths, criterion, steps)
    if pruned.arch_config["channels"] != widths:
        raise RuntimeError(f"Torch-Pruning left widths {pruned.arch_config['channels']}, "
                           f"asked for {widths}")
    _check_rebuild(pruned)
    return pruned


def prune_model(
    model: nn.Module,
    example_input: torch.Tensor | Sequence[int],
    *,
    ratio: float | None = None,
    target_params: int | None = None,
    target_macs: int | None = None,
    criterion: str = "l2",
    steps: int = 1,
    round_to: int | None = None,
    min_channels: int = 1,
    inplace: bool = False,
) -> nn.Module:
    """Structured-prune `model` and return the pruned model (a copy unless `inplace`).

    Either `ratio` (the fraction of channels removed from every coupled group,
    0 <= ratio < 1: a group of c keeps int(c * (1 - ratio))), or a budget:
    `target_params` and/or `target_macs` (MACs for one example shaped like
    `example_input`), met with the smallest ratio that fits (bisection on the
    ratio; widths are predicted by rebuilding the architecture, so only the
    final pruning runs Torch-Pruning). Groups never drop below `min_channels`
    (nor `round_to`); `round_to` keeps widths multiples of it, and with a budget the
    layers rounding left narrower than the budget allows are widened back a step at a
    time from the input side (`fill_budget`).
    `criterion`: "l2" (L2 weight magnitude) or "bn_scale" (BN |gamma|).
    `steps` > 1 removes the channels in that many rounds, re-scoring importance
    between them (no training: the prune -> fine-tune loop belongs to the caller).

    The result has `arch`, an `arch_config` read back from its modules (so
    `create_model(arch, n_classes, n_frames, n_mels, **arch_config)` +
    `load_state_dict` rebuilds it exactly) and `pruning`, a dict of what was done.
    """
    from edgetune.nets import create_model

    _validate(model, criterion, steps)
    budget = target_params is not None or target_macs is not None
    if (ratio is None) == (not budget):
        raise ModelError("give either ratio or a budget (target_params and/or target_macs)")
    x = _example(model, example_input)
    shape = (1, *x.shape[1:])
    params0, macs0 = count_params(model), count_macs(model, shape)
    channels0 = list(model.arch_config["channels"])
    n_classes = n_outputs(model)
    cache: dict[tuple, tuple[int, int]] = {}

    def cost(widths: list[int]) -> tuple[int, int]:
        key = tuple(widths)
        if key not in cache:  # on the meta device: shapes only, no weights, no arithmetic
            with torch.device("meta"):
                m = create_model(model.arch, n_classes, model.n_frames, model.n_mels,
                                 **{**model.arch_config, "channels": widths})
            cache[key] = (count_params(m), count_macs(m, shape))
        return cache[key]

    def fits(params: int, macs: int) -> bool:
        return ((target_params is None or params <= target_params)
                and (target_macs is None or macs <= target_macs))

    def widths_at(r: float) -> list[int]:
        return widths_for_ratio(channels0, r, round_to=round_to, min_channels=min_channels)

    if not budget:
        chosen = float(ratio)
        if not 0.0 <= chosen < 1.0:
            raise ModelError(f"pruning ratio must be in [0, 1), got {ratio}")
    elif fits(params0, macs0):
        chosen = 0.0
    else:
        floor = widths_at(1.0 - 1e-9)
        if not fits(*cost(floor)):
            p, m = cost(floor)
            raise ModelError(
                f"{model.arch}: budget (params <= {target_params}, MACs <= {target_macs}) is out "
                f"of reach: at the narrowest widths {floor} it still has {p} params, {m} MACs; "
                "pick a smaller model or a larger budget")
        lo, hi = 0.0, 1.0 - 1e-9
        for _ in range(24):  # ~1e-7 in ratio: finer than one channel of any layer
            mid = (lo + hi) / 2
            if fits(*cost(widths_at(mid))):
                hi = mid
            else:
                lo = mid
        chosen = hi

    widths = widths_at(chosen)
    if budget and round_to:
        widths = fill_budget(widths, channels0, int(round_to), lambda w: fits(*cost(w)))
    pruned = prune_to_widths(model, x, widths, criterion=criterion, steps=steps, inplace=inplace)
    params1, macs1 = cost(widths)  # exact: the widths and every tensor shape were checked
    if params1 != count_params(pruned):
        raise RuntimeError(f"pruned {model.arch}: {count_params(pruned)} params, predicted {params1}")
    if budget and not fits(params1, macs1):
        raise RuntimeError(f"pruned {model.arch} misses its budget: {params1} params, {macs1} MACs")
    pruned.pruning = {
        "criterion": criterion, "ratio": round(chosen, 6), "steps": int(steps),
        "round_to": round_to, "target_params": target_params, "target_macs": target_macs,
        "params_before": params0, "params_after": params1,
        "macs_before": macs0, "macs_after": macs1,
        "channels_before": channels0, "channels_after": list(pruned.arch_config["channels"]),
    }
    return pruned


def step_ratios(ratio: float, steps: int) -> list[float]:
    """Per-round ratios (each relative to the widths left by the previous round)
    that remove `ratio` of the original widths in `steps` equal linear steps.
    E.g. step_ratios(0.5, 2) == [0.25, 0.333...]."""
    if not 0.0 <= ratio < 1.0 or steps < 1:
        raise ValueError("ratio in [0, 1) and steps >= 1")
    keep = [1.0 - ratio * k / steps for k in range(steps + 1)]
    return [1.0 - keep[k + 1] / keep[k] for k in range(steps)]


def step_budgets(start: int, target: int, steps: int) -> list[int]:
    """Geometric per-round budgets from `start` down to `target` (params or MACs)."""
    if steps < 1 or target <= 0 or start <= 0:
        raise ValueError("positive start/target and steps >= 1")
    q = (target / start) ** (1.0 / steps)
    out = [math.floor(start * q ** k) for k in range(1, steps + 1)]
    out[-1] = int(target)
    return out


def step_widths(start: Sequence[int], target: Sequence[int], steps: int, round_to: int = 1) -> list[list[int]]:
    """Per-round widths from `start` to `target` in `steps` linear steps, the ones between
    rounded up to multiples of `round_to` (the last is `target` exactly)."""
    start, target = [int(c) for c in start], [int(w) for w in target]
    if len(start) != len(target) or any(not 1 <= w <= c for w, c in zip(target, start)):
        raise ModelError(f"widths {target} must give one width per layer, each 1..now {start}")
    if steps < 1:
        raise ValueError("steps >= 1")
    r = max(1, int(round_to))
    out = [[min(c, -(-round(c - (c - w) * k / steps) // r) * r) for c, w in zip(start, target)]
           for k in range(1, steps)]
    return out + [target]
