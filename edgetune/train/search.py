"""`edgetune finetune --auto`: a handful of fine-tuning trials, picked on validation.

Trials vary the knobs that matter most when adapting a pretrained net: learning
rate, how many early blocks stay frozen, and how slowly the convolutions move
relative to the head. Each trial is a full fine-tune in RUN/trials/<k>/ and one
line in RUN/log.jsonl; the best by validation accuracy becomes RUN/finetuned.pt.
The test split is never looked at to choose. With `soup`, the trials' weights are
averaged greedily instead (`greedy_soup`), never below the best trial on validation.
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
        souped = greedy_soup(data, [r["checkpoint"] for r, _ in results], out / "finetuned.pt", say)
        return {**chosen, **souped}
    shutil.copyfile(best["checkpoint"], out / "finetuned.pt")
    return chosen


def average_states(states: list[dict]) -> dict:
    """The mean of each float tensor; integer buffers (batch counts) from the first."""
    return {k: (sum(s[k] for s in states) / len(states)) if states[0][k].is_floating_point() else states[0][k]
            for k in states[0]}


def greedy_soup(data, checkpoints: list[str], out: Path, say=print) -> dict:
    """Greedy soup (Wortsman et al. 2022): from the best trial by validation accuracy,
    add each next-best trial to the weight average only if validation accuracy does
    not drop. All trials start from the same weights (the base, and the same seeded
    head), which is what makes their average a good model. Writes `out`."""
    import torch

    from edgetune.frontend import FrontEnd
    from edgetune.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from edgetune.train.finetune import load_tensors
    from edgetune.train.loop import accuracy, features_of, predict

    ckpts = [load_checkpoint(p) for p in checkpoints]
    fe = FrontEnd.from_dict(ckpts[0]["frontend"])
    tensors = load_tensors(data, fe, labels=ckpts[0]["labels"])
    cpu = torch.device("cpu")
    val, test = features_of(fe, tensors.val.clips, cpu), features_of(fe, tensors.test.clips, cpu)

    def scores(state: dict) -> tuple[float, float]:
        model = model_from_checkpoint({**ckpts[0], "state_dict": state})
        return (accuracy(predict(model, val, cpu), tensors.val.targets),
                accuracy(predict(model, test, cpu), tensors.test.targets))

    order = sorted(range(len(ckpts)), key=lambda i: -ckpts[i]["meta"]["metrics"]["val_accuracy"])
    members = [order[0]]
    best_val, best_test = scores(ckpts[order[0]]["state_dict"])
    single = {"val_accuracy": round(best_val, 4), "test_accuracy": round(best_test, 4)}
    for i in order[1:]:
        if ckpts[i]["arch_config"] != ckpts[order[0]]["arch_config"]:
            continue  # a different shape cannot be averaged
        val_acc, test_acc = scores(average_states([ckpts[j]["state_dict"] for j in members + [i]]))
        kept = val_acc >= best_val
        say(f"soup: + trial {i} -> val {val_acc:.4f} ({'kept' if kept else 'left out'})")
        if kept:
            members.append(i)
            best_val, best_test = val_acc, test_acc
    soup = {**ckpts[order[0]], "state_dict": average_states([ckpts[j]["state_dict"] for j in members])}
    soup["meta"] = {**soup["meta"], "metrics": {**soup["meta"]["metrics"], "val_accuracy": round(best_val, 4),
                                                 "test_accuracy": round(best_test, 4)},
                    "recipe": {**soup["meta"]["recipe"], "soup_trials": members}}
    save_checkpoint(soup, out)
    return {"val_accuracy": round(best_val, 4), "test_accuracy": round(best_test, 4),
            "soup_trials": members, "best_single_trial": single}
