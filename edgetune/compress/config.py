"""The settings of one `edgetune compress` run, torch-free so the CLI takes its defaults
from here at import time instead of repeating them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgetune.data.augment import AugmentConfig


DEFAULT_RATIO = 0.5


@dataclass
class CompressConfig:
    # fraction of channels removed; None: DEFAULT_RATIO when no budget is given, but 0 (int8
    # only) for a model whose trunk is fixed pretrained weights (sembed), which is not pruned
    ratio: float | None = None
    target_params: int | None = None
    target_macs: int | None = None
    widths: list[int] | None = None  # exact widths per layer (arch_config["channels"]): overrides the rest
    criterion: str = "l2"
    round_to: int = 16  # pruned widths stay multiples of this: other widths fall off fast int8 kernels
    steps: int = 2
    epochs_per_step: int = 4
    qat_epochs: int = 4
    lr: float = 2e-3
    qat_lr: float = 5e-4
    batch_size: int = 64
    min_accuracy: float | None = None
    max_drop: float | None = 0.01
    device: str = "auto"
    seed: int = 0
    augment: AugmentConfig | None = None  # None: the fine-tune run's own, else the default
