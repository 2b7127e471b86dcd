"""`edgetune finetune --auto`: a handful of fine-tuning trials, picked on validation.

Trials vary the knobs that matter most when adapting a pretrained net: learning
rate, how many early blocks stay frozen, and how slowly the convolutions move
relative to the head. Each trial is a full fine-tune in RUN/trials/<k>/ and one
line in RUN/log.jsonl; the best by validation accuracy becomes RUN/finetuned.pt.
The test split is never looked at to choose. With `soup`, the trials' weights are
averaged greedily instead (`edgetune.train.soup`), never below the best trial on validation.
"""

from __future__ import annotations

import itertools
import json
import random
import shutil
from dataclasses import replace
from pathlib import Path

from edgetune.train.loop import TrainConfig

GRID = {"lr": (1e-3, 3e-3, 1e-2), "freeze": (0, 1, 2), "conv_lr_scale": (0.1, 0.3, 1.0)}


def trial_configs(base: TrainConfig, n: int, seed: int = 0) -> list[TrainConfig]:
    """The user's own settings first, then n-1 distinct grid points drawn with the seed."""
    points = list(itertools.product(*GRID.values()))
    random.Random(seed).shuffle(points)
    configs = [base]
    for lr, freeze, scale in points:
        if len(configs) >= n:
            break
        cfg = replace(base, lr=lr, freeze=freeze, conv_lr_scale=scale)
        if cfg != base:
            configs.append(cfg)
    return configs


def auto_finetune(data, out, *, trials: int = 4, cfg: TrainConfig | None = None, say=print,
                  soup: bool = False, **finetune_kwargs) -> dict:
    from edgetune.train.finetune import finetune

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for k, trial_cfg in enumerate(trial_configs(cfg or TrainConfig(), trials, (cfg or TrainConfig()).seed)):
        r = finetune(data, out / "trials" / str(k), cfg=trial_cfg, **finetune_kwargs)
        line = {"trial": k, "lr": trial_cfg.lr, "freeze": trial_cfg.freeze,
                "conv_lr_scale": trial_cfg.conv_lr_scale, "val_accuracy": r["val_accuracy"],
                "test_accuracy": r["test_accuracy"], "checkpoint": r["checkpoint"]}
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
        say(f"trial {k}: lr {trial_cfg.lr:g} freeze {trial_cfg.freeze} conv-lr-scale "
            f"{trial_cfg.conv_lr_scale:g} -> val {r['val_accuracy']:.4f}")
        results.append((r, line))
    best, best_line = max(results, key=lambda rl: rl[0]["val_accuracy"])
    chosen = {**best, "checkpoint": str(out / "finetuned.pt"), "trials": [line for _, line in results],
              "chosen_trial": best_line["trial"]}
    if soup:
        from edgetune.train.soup import greedy_soup

        souped = greedy_soup([r["checkpoint"] for r, _ in results], out / "finetuned.pt", data, say)
        return {**chosen, "val_accuracy": souped["val_accuracy"], "test_accuracy": souped["test_accuracy"],
                "soup_trials": souped["members"], "best_single_trial": souped["best_single"]}
    shutil.copyfile(best["checkpoint"], out / "finetuned.pt")
    return chosen
