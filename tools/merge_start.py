"""How good a distilled merge's starting point is, before any training, as JSON.

    python tools/merge_start.py runs/m_commands/finetuned.pt runs/m_digits/finetuned.pt \
        runs/m_vowels/finetuned.pt --shared 4 --out merge_start.json

Builds the student `edgetune merge --distill --shared N` would start from, twice: with
its trunk as merge makes it (the teachers' trunks averaged) and with the first model's
trunk alone, and scores each head on its own validation clips, with the batch-norm
statistics as loaded and re-estimated on training clips of every task (what the first
epoch of distillation does anyway). Each model's recorded dataset is used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgetune.frontend import FrontEnd
from edgetune.train.checkpoint import load_checkpoint
from edgetune.train.loop import features_of, predict
from edgetune.train.merge import distil_student, head_names, per_head_accuracy, union_tensors

CPU = torch.device("cpu")


def first_model_trunk(student: torch.nn.Module, first: dict) -> torch.nn.Module:
    trunk = student.nets[0].blocks[: student.shared]
    trunk.load_state_dict({k: first["state_dict"][f"blocks.{k}"] for k in trunk.state_dict()})
    return student


def reestimate_batchnorm(model: torch.nn.Module, feats: torch.Tensor) -> torch.nn.Module:
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a plain average over every batch below
    model.train()
    with torch.no_grad():
        for batch in feats.split(256):
            model(batch)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--shared", type=int, required=True)
    ap.add_argument("--bn-clips", type=int, default=2000, help="Training clips for the batch-norm statistics.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    ckpts = [load_checkpoint(p) for p in args.checkpoints]
    fe = FrontEnd.from_dict(ckpts[0]["frontend"])
    names = head_names(ckpts, args.checkpoints, None)
    heads = [{"name": n, "labels": c["labels"]} for n, c in zip(names, ckpts)]
    data = union_tensors([c["meta"]["data"]["source"] for c in ckpts], [c["labels"] for c in ckpts], fe)
    val = features_of(fe, data.val.clips, CPU)
    pick = torch.randperm(len(data.train.targets), generator=torch.Generator().manual_seed(args.seed))
    train = features_of(fe, data.train.clips[pick[: args.bn_clips]], CPU)

    result = {"shared": args.shared, "heads": names}
    starts = {"averaged_trunk": lambda: distil_student(ckpts, names, fe, args.shared),
              "first_model_trunk": lambda: first_model_trunk(distil_student(ckpts, names, fe, args.shared),
                                                             ckpts[0])}
    for name, build in starts.items():
        model = build().eval()
        result[name] = {"val_accuracy": per_head_accuracy(predict(model, val, CPU), data.val.targets, heads)}
        model = reestimate_batchnorm(model, train)
        result[name]["val_accuracy_bn_reestimated"] = per_head_accuracy(
            predict(model, val, CPU), data.val.targets, heads)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
