"""Weight averaging, a greedy model soup (Wortsman et al. 2022).

Copies of one network trained from the same starting weights (fine-tune trials,
compress runs with different seeds) sit in one basin of the loss, so the mean of
their weights is a model too, and often a better one than any copy. Greedy: the
copy best on validation starts the soup, and each next-best joins only if
validation accuracy does not drop, so the soup never scores below the best copy.
The test split is scored for the report, never to choose.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgetune.errors import EdgetuneError

SAME = ("arch", "arch_config", "labels", "heads", "frontend")  # what every copy must share


def average_states(states: list[dict]) -> dict:
    """The mean of each float tensor; integer buffers (batch counts) from the first."""
    return {k: (sum(s[k] for s in states) / len(states)) if states[0][k].is_floating_point() else states[0][k]
            for k in states[0]}


def check_soupable(ckpts: list[dict], paths: list[Path]) -> None:
    for path, ckpt in zip(paths, ckpts):
        if ckpt.get("quant"):
            raise EdgetuneError(f"{path}: a quantized (QAT) checkpoint; average the float ones "
                                "(finetuned.pt or pruned.pt), then compress the soup")
        for key in SAME:
            if ckpt.get(key) != ckpts[0].get(key):
                raise EdgetuneError(f"{path}: its {key} differs from {paths[0]}'s; only copies of one "
                                    "network (same widths, labels and front end) can be averaged")


def greedy_soup(checkpoints: list[str | Path], out: str | Path, data=None, say=print) -> dict:
    """Average `checkpoints` greedily on validation accuracy; writes `out`.

    `data`: the dataset (a folder; for a merged model, {head: folder} overrides),
    else what the checkpoints record. Returns the soup's scores, its members
    (indices into `checkpoints`) and every copy's own scores."""
    from edgetune.frontend import FrontEnd
    from edgetune.nets.multihead import head_slices
    from edgetune.train.checkpoint import (
        lineage_link,
        load_checkpoint,
        model_from_checkpoint,
        save_checkpoint,
    )
    from edgetune.train.loop import accuracy, features_of, predict
    from edgetune.train.merge import checkpoint_tensors, per_head_accuracy

    paths = [Path(p) for p in checkpoints]
    ckpts = [load_checkpoint(p) for p in paths]
    check_soupable(ckpts, paths)
    fe = FrontEnd.from_dict(ckpts[0]["frontend"])
    tensors = checkpoint_tensors(ckpts[0], data)
    cpu = torch.device("cpu")
    val, test = features_of(fe, tensors.val.clips, cpu), features_of(fe, tensors.test.clips, cpu)

    def scores(state: dict) -> dict:
        model = model_from_checkpoint({**ckpts[0], "state_dict": state}).eval()
        slices, test_logits = head_slices(model), predict(model, test, cpu)
        s = {"val_accuracy": round(accuracy(predict(model, val, cpu), tensors.val.targets, slices), 4),
             "test_accuracy": round(accuracy(test_logits, tensors.test.targets, slices), 4)}
        if ckpts[0].get("heads"):
            s["test_accuracy_per_head"] = per_head_accuracy(test_logits, tensors.test.targets, ckpts[0]["heads"])
        return s

    each = [scores(c["state_dict"]) for c in ckpts]
    order = sorted(range(len(ckpts)), key=lambda i: -each[i]["val_accuracy"])
    members, best = [order[0]], each[order[0]]
    for i in order[1:]:
        trial = scores(average_states([ckpts[j]["state_dict"] for j in members + [i]]))
        kept = trial["val_accuracy"] >= best["val_accuracy"]
        say(f"soup: + {paths[i]} -> val {trial['val_accuracy']:.4f} ({'kept' if kept else 'left out'})")
        if kept:
            members, best = members + [i], trial
    first = ckpts[order[0]]
    soup = {**first, "state_dict": average_states([ckpts[j]["state_dict"] for j in members]),
            "meta": {**first["meta"], "metrics": {**first["meta"]["metrics"], **best},
                     "recipe": {**first["meta"]["recipe"],
                                "soup_of": [lineage_link(paths[j], ckpts[j]) for j in members]}}}
    save_checkpoint(soup, out)
    return {"checkpoint": str(out), "stage": first["meta"]["stage"], **best, "members": members, "each": each, "best_single": each[order[0]]}
