"""`edgetune merge`: several fine-tuned models as one multi-head model.

Two ways, chosen by what the models share:
- exact: models fine-tuned from one base with their first blocks frozen have those
  blocks equal bit for bit; they become the shared trunk, and each head keeps its
  own remaining blocks and classifier. Nothing is trained; every head answers
  exactly as its own model did.
- distilled: otherwise (or with `distill=True`), a student whose first `shared`
  blocks (default: all) are one trunk, started from the teachers' trunks
  averaged, with each head's other blocks and classifier started from its
  teacher, learns on the union of the teachers' data: each head from its
  teacher's soft labels on every clip, plus the hard labels of its own clips.
  It trains with the teachers' own augmentation, and logs each epoch to
  `merge-log.jsonl` beside the merged checkpoint.

The merged checkpoint lists its heads (`heads`: name and labels each); its
`labels` are the heads' labels side by side, the model's output columns.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch
from torch import nn

from edgetune.errors import EdgetuneError
from edgetune.frontend import FrontEnd
from edgetune.nets.multihead import ARCH, head_depths, split_config
from edgetune.train.checkpoint import (
    lineage_link,
    load_checkpoint,
    make_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from edgetune.train.loop import (
    Split,
    TrainConfig,
    Trainer,
    accuracy,
    features_of,
    predict,
    use_all_cores,
)

MERGE_LOG = "merge-log.jsonl"

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class Teachers(nn.Module):
    """The teachers side by side: their logits concatenated in head order."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m(x) for m in self.models], dim=1)


def head_names(ckpts: list[dict], paths: list[Path], names: list[str] | None) -> list[str]:
    """Given names, else each model's dataset folder name (commands, digits, ...)."""
    if names:
        if len(names) != len(ckpts):
            raise EdgetuneError(f"--names gives {len(names)} names for {len(ckpts)} models")
    else:
        names = [Path(c["meta"].get("data", {}).get("source") or p.stem).name for c, p in zip(ckpts, paths)]
    names = [re.sub(r"\W", "_", n) for n in names]
    if len(set(names)) != len(names):
        raise EdgetuneError(f"head names repeat ({names}); name them with --names a,b,c")
    bad = [n for n in names if not _NAME.match(n)]
    if bad:
        raise EdgetuneError(f"head names must start with a letter (letters, digits, _): {bad}")
    return names


def check_mergeable(ckpts: list[dict], paths: list[Path]) -> FrontEnd:
    if len(ckpts) < 2:
        raise EdgetuneError("merge needs at least two models")
    for c, p in zip(ckpts, paths):
        if c.get("quant"):
            raise EdgetuneError(f"{p}: a QAT checkpoint; merge the float models, then compress the merged one")
        if c.get("heads"):
            raise EdgetuneError(f"{p}: already a merged model; merge the single models it came from")
    fronts = {str(sorted(c["frontend"].items())) for c in ckpts}
    if len(fronts) > 1:
        raise EdgetuneError("the models use different front ends; merged heads share one front end, "
                            "so fine-tune them from the same base")
    return FrontEnd.from_dict(ckpts[0]["frontend"])


def head_inputs(ckpts: list[dict]) -> list[bool] | None:
    """Each model's band-mean removal when they disagree (the trunk then runs once per
    input: a vowels head keeps the band means a word head removes); None when they agree."""
    cmn = [bool(c["arch_config"].get("cmn", False)) for c in ckpts]
    return cmn if len(set(cmn)) > 1 else None


def same_architecture(a: dict, b: dict) -> bool:
    """Same net and widths; the input normalisation may differ (see head_inputs)."""
    def body(config: dict) -> dict:
        return {k: v for k, v in config.items() if k != "cmn"}

    return a["arch"] == b["arch"] and body(a["arch_config"]) == body(b["arch_config"])


def shared_prefix(ckpts: list[dict]) -> int:
    """Leading blocks equal bit for bit in every model (0 when the architectures differ;
    the input normalisation may differ, see head_inputs)."""
    first = ckpts[0]
    if not all(same_architecture(c, first) for c in ckpts):
        return 0
    n_blocks = n_blocks_of(first)
    for j in range(n_blocks):
        prefix = f"blocks.{j}."
        keys = [k for k in first["state_dict"] if k.startswith(prefix)]
        if not all(torch.equal(c["state_dict"][k], first["state_dict"][k]) for c in ckpts[1:] for k in keys):
            return j
    return n_blocks


def multihead_like(ckpts: list[dict], names: list[str], shared: int | list[int], fe: FrontEnd) -> nn.Module:
    """A MultiHead of the first model's architecture sharing `shared` blocks (per head)."""
    from edgetune.nets import create_model

    base_config, widths = split_config(ckpts[0]["arch_config"])
    depths = head_depths(shared, len(ckpts), len(widths))
    own = [w for d in depths for w in widths[d:]]
    heads = [[name, len(c["labels"])] for name, c in zip(names, ckpts)]
    return create_model(ARCH, sum(n for _, n in heads), fe.n_frames, fe.n_mels, base=ckpts[0]["arch"],
                        base_config=base_config, shared=shared, heads=heads,
                        channels=widths[: max(depths)] + own, head_cmn=head_inputs(ckpts))


def exact_merge(ckpts: list[dict], names: list[str], shared: int, fe: FrontEnd) -> nn.Module:
    model = multihead_like(ckpts, names, shared, fe)
    for net, c in zip(model.nets, ckpts):
        net.load_state_dict(c["state_dict"])  # shared blocks load the same tensors from each
    return model.eval()


def n_blocks_of(ckpt: dict) -> int:
    return len(model_from_checkpoint(ckpt).blocks)


def distil_student(ckpts: list[dict], names: list[str], fe: FrontEnd, shared: int | list[int],
                   trunk_from: str | None = None) -> nn.Module:
    """Each shared block started from the average of the teachers that share it (they were
    fine-tuned from one base, so their average still works for every task: measured, it
    starts each head far nearer its teacher than the first model's trunk does); from the
    first model's alone when the architectures differ. Each head's other blocks come from
    its own teacher where it has the same architecture (else from the first model), and
    its classifier from its teacher. With `trunk_from` (a head's name), the blocks that
    head shares come from its teacher alone: that head starts exactly as its own model,
    and the others, usually easier tasks, adapt to its features."""
    student = multihead_like(ckpts, names, shared, fe)
    depths = student.depths
    first = ckpts[0]
    average = all(same_architecture(c, first) for c in ckpts)
    leader = names.index(trunk_from) if trunk_from else None
    for net, c, depth in zip(student.nets, ckpts, depths):
        same = same_architecture(c, first)
        state = {}
        for k, v in first["state_dict"].items():
            block = int(k.split(".")[1]) if k.startswith("blocks.") else None
            own = k.startswith("classifier.") or (block is not None and block >= depth and same)
            trunk = block is not None and block < depth
            if own:
                state[k] = c["state_dict"][k]
            elif trunk and average and v.is_floating_point():
                sharing = [t for t, d in zip(ckpts, depths) if d > block]
                if leader is not None and depths[leader] > block:
                    sharing = [ckpts[leader]]
                state[k] = sum(t["state_dict"][k] for t in sharing) / len(sharing)
            else:
                state[k] = v
        net.load_state_dict(state)
    return student


def teachers_augment(ckpts: list[dict]):
    """The augmentation the teachers were fine-tuned with, when they agree (else the default)."""
    from edgetune.compress.pipeline import finetune_augment
    from edgetune.data.augment import AugmentConfig

    augments = [finetune_augment(c) for c in ckpts]
    return augments[0] if augments[0] and all(a == augments[0] for a in augments) else AugmentConfig()


def union_tensors(sources: list[str | Path], label_sets: list[list[str]], fe: FrontEnd,
                  progress: bool = False):
    """Every head's dataset in one DataTensors, targets numbered in the merged output."""
    from edgetune.train.finetune import DataTensors, load_tensors

    parts, offset = [], 0
    for source, labels in zip(sources, label_sets):
        if not source or not Path(source).exists():
            raise EdgetuneError(f"the dataset {source!r} of a head is missing; pass --data NAME=DIR")
        t = load_tensors(source, fe, labels=labels, progress=progress)
        if t.dataset.labels != labels:
            raise EdgetuneError(f"{source}: its labels {t.dataset.labels} differ from the model's {labels}")
        parts.append((t, offset))
        offset += len(labels)

    def joined(name: str) -> Split:
        return Split(torch.cat([getattr(t, name).clips for t, _ in parts]),
                     torch.cat([getattr(t, name).targets + off for t, off in parts]))

    return DataTensors(parts[0][0].dataset, joined("train"), joined("val"), joined("test"),
                       [n for t, _ in parts for n in t.noise])


def head_sources(ckpt: dict, overrides: dict[str, str] | None = None) -> list[str]:
    """Each head's dataset: the override for its name, else what the merge recorded."""
    overrides = overrides or {}
    recorded = ckpt["meta"].get("data", {}).get("source") or [None] * len(ckpt["heads"])
    return [overrides.get(h["name"], s) for h, s in zip(ckpt["heads"], recorded)]


def checkpoint_tensors(ckpt: dict, data, progress: bool = False):
    """The data a checkpoint was trained on (every head's, for a merged model)."""
    from edgetune.train.finetune import load_tensors

    fe = FrontEnd.from_dict(ckpt["frontend"])
    if ckpt.get("heads"):
        overrides = data if isinstance(data, dict) else {}
        return union_tensors(head_sources(ckpt, overrides), [h["labels"] for h in ckpt["heads"]], fe, progress)
    data = data or ckpt["meta"].get("data", {}).get("source")
    if not data:
        raise EdgetuneError("the checkpoint records no dataset; pass --data DIR")
    return load_tensors(data, fe, labels=ckpt["labels"], progress=progress)


def per_head_accuracy(logits: torch.Tensor, targets: torch.Tensor, heads: list[dict]) -> dict[str, float]:
    out, start = {}, 0
    for h in heads:
        end = start + len(h["labels"])
        mine = (targets >= start) & (targets < end)
        out[h["name"]] = round(accuracy(logits[mine, start:end], targets[mine] - start), 4)
        start = end
    return out


def merge(checkpoints: list[str | Path], out: str | Path, *, names: list[str] | None = None,
          data: dict[str, str] | None = None, distill: bool = False, shared: int | list[int] | None = None,
          trunk_from: str | None = None, cfg: TrainConfig | None = None, command: str = "",
          progress: bool = False) -> dict:
    paths = [Path(p) for p in checkpoints]
    ckpts = [load_checkpoint(p) for p in paths]
    fe = check_mergeable(ckpts, paths)
    names = head_names(ckpts, paths, names)
    data = data or {}
    unknown = set(data) - set(names)
    if unknown:
        raise EdgetuneError(f"--data names {sorted(unknown)} match no head; heads: {', '.join(names)}")
    if trunk_from is not None and trunk_from not in names:
        raise EdgetuneError(f"--trunk-from {trunk_from}: no such head; heads: {', '.join(names)}")
    heads = [{"name": n, "labels": list(c["labels"]),
              "data": data.get(n) or c["meta"].get("data", {}).get("source")} for n, c in zip(names, ckpts)]
    exact = shared_prefix(ckpts)
    distill = distill or not exact
    if shared is not None and not distill:
        raise EdgetuneError(f"the models share their first {exact} blocks exactly, so nothing is trained "
                            "and --shared does not apply; add --distill to distil a student instead")
    if trunk_from is not None and not distill:
        raise EdgetuneError("--trunk-from starts a distilled student; the models share blocks exactly, "
                            "so add --distill")
    n_blocks = n_blocks_of(ckpts[0])
    shared = n_blocks if shared is None else shared
    try:
        head_depths(shared, len(ckpts), n_blocks)
    except ValueError:
        raise EdgetuneError(f"--shared {shared}: the models have {n_blocks} blocks; share 1 to {n_blocks}, "
                            f"as one number or one per head ({len(ckpts)}), e.g. --shared 3 or "
                            f"--shared {','.join(['3'] * len(ckpts))}") from None
    use_all_cores()
    tensors = union_tensors([h["data"] for h in heads], [h["labels"] for h in heads], fe, progress)
    teachers = Teachers([model_from_checkpoint(c).eval() for c in ckpts])
    cfg = dataclasses.replace(cfg or TrainConfig(epochs=10, lr=2e-3, distill_alpha=0.7),
                              augment=teachers_augment(ckpts))
    if not distill:
        model, how, history = exact_merge(ckpts, names, exact, fe), "exact", []
    else:
        log = Path(out).parent / MERGE_LOG  # one line per epoch, as finetune's log.jsonl
        log.parent.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)
        trainer = Trainer(distil_student(ckpts, names, fe, shared, trunk_from), fe, tensors.train, tensors.val, cfg,
                          tensors.noise, teacher=teachers, log_path=log, progress=progress)
        model, how, history = trainer.run(), "distilled", trainer.history

    test_feats = features_of(fe, tensors.test.clips, torch.device("cpu"))
    cpu = torch.device("cpu")
    merged_acc = per_head_accuracy(predict(model, test_feats, cpu), tensors.test.targets, heads)
    own_acc = per_head_accuracy(predict(teachers, test_feats, cpu), tensors.test.targets, heads)
    labels = [lab for h in heads for lab in h["labels"]]
    ckpt = make_checkpoint(
        model, labels=labels, frontend=fe, stage="finetuned", parent=lineage_link(paths[0], ckpts[0]),
        data={"source": [h["data"] for h in heads]},
        recipe={"command": command, "merge": how, "shared_blocks": model.shared,
                **({"trunk_from": trunk_from} if trunk_from else {}),
                # what compress trains with: the heads' own augmentation
                **({"train": cfg.to_dict()} if how == "distilled" else {"augment": cfg.augment.to_dict()})},
        metrics={"test_accuracy_per_head": merged_acc, "own_model_test_accuracy": own_acc},
        extra_meta={"merged_from": [lineage_link(p, c) for p, c in zip(paths, ckpts)]},
        heads=[{"name": h["name"], "labels": h["labels"]} for h in heads])
    out = Path(out)
    save_checkpoint(ckpt, out)
    return {"checkpoint": str(out), "how": how, "shared_blocks": model.shared,
            "heads": [h["name"] for h in heads], "params": ckpt["meta"]["params"],
            "params_separate": sum(c["meta"]["params"] for c in ckpts),
            "macs": ckpt["meta"]["macs"], "macs_separate": sum(c["meta"]["macs"] for c in ckpts),
            "test_accuracy": merged_acc, "own_model_test_accuracy": own_acc, "history": history,
            "trunk_passes": len(set(model.input_norms()))}
