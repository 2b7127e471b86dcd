"""`edgetune compress`: fine-tuned -> pruned -> int8 (QAT), with a per-stage table.

Pruning is iterative: each step removes a slice of channels (really removes
them; the new widths go into arch_config) and then recovers with a short
fine-tune distilled from the unpruned model. A step that takes validation
accuracy under the floor (--min-accuracy, or the fine-tuned accuracy minus
--max-drop) is undone, and pruning stops there. QAT then fine-tunes the pruned
model with simulated int8 (distilled from the unpruned float model). Both
train with the augmentation the model was fine-tuned with (read from its
recipe): a stronger one shifts a model tuned on lighter data and cost 1-2
points of int8 accuracy (measured: README, "Measured accuracy").
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from pathlib import Path

import torch

from edgetune.compress.config import DEFAULT_RATIO, CompressConfig
from edgetune.data.augment import AugmentConfig
from edgetune.errors import EdgetuneError
from edgetune.files import write_json_atomic
from edgetune.frontend import FrontEnd
from edgetune.nets.multihead import head_slices
from edgetune.train import distributed
from edgetune.train.checkpoint import (
    lineage_link,
    load_checkpoint,
    make_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from edgetune.train.loop import TrainConfig, Trainer, accuracy, features_of, predict, resolve_device
from edgetune.train.merge import checkpoint_tensors

PRUNED, QAT = "pruned.pt", "qat.pt"


def _train_cfg(cc: CompressConfig, epochs: int, lr: float) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=lr, batch_size=cc.batch_size, warmup_epochs=0.5,
                       distill_alpha=0.7, device=cc.device, seed=cc.seed, augment=cc.augment)


def finetune_augment(ckpt: dict) -> AugmentConfig | None:
    """The augmentation a checkpoint was trained with, if its recipe records one (a merge
    records its training under `train`)."""
    recipe = ckpt["meta"].get("recipe") or {}
    try:
        return AugmentConfig(**(recipe.get("augment") or recipe["train"]["augment"]))
    except (KeyError, TypeError):  # no recipe (a shipped base) or another shape
        return None


def distillation_teacher(ckpt: dict, float_model, log):
    """Whom pruning recovery and QAT learn from. For a merged model (or one pruned or
    averaged from it): the models it was merged from, each its own head's teacher
    (better than the merged float model, whose small losses QAT would otherwise copy),
    when their files are still there unchanged; else the float model itself."""
    from edgetune.train.checkpoint import sha256_file
    from edgetune.train.merge import Teachers

    links = merged_from(ckpt)
    if not ckpt.get("heads") or len(links) != len(ckpt["heads"]):
        return float_model, "self"
    models = []
    for link, head in zip(links, ckpt["heads"]):
        path = Path(link["path"])
        if not path.exists() or sha256_file(path) != link["sha256"]:
            log(f"{path} (head {head['name']}) is missing or changed; distilling from the merged model")
            return float_model, "self"
        models.append(model_from_checkpoint(load_checkpoint(path)).eval())
    return Teachers(models).eval(), "merged_from"


def merged_from(ckpt: dict) -> list[dict]:
    """The links to the models a merge was made of: recorded in the merged checkpoint,
    found up the lineage (`parent` links whose files are unchanged) for its pruned
    runs and their soups."""
    from edgetune.train.checkpoint import sha256_file

    meta = ckpt["meta"]
    while not meta.get("merged_from"):
        link = meta.get("parent")
        if not link or not Path(link["path"]).is_file() or sha256_file(link["path"]) != link["sha256"]:
            return []
        meta = load_checkpoint(link["path"])["meta"]
    return meta["merged_from"]


def _schedule(cc: CompressConfig, model, shape) -> list[dict]:
    """Per-step arguments for prune_model: ratios, budgets shrinking geometrically, or
    widths stepping linearly to the ones asked for."""
    from edgetune.compress.prune import has_fixed_trunk, step_budgets, step_ratios, step_widths
    from edgetune.nets import count_macs, count_params

    if cc.widths:
        return [{"widths": w} for w in step_widths(model.arch_config["channels"], cc.widths, cc.steps,
                                                   cc.round_to)]
    if cc.target_params or cc.target_macs:
        p = step_budgets(count_params(model), cc.target_params, cc.steps) if cc.target_params else [None] * cc.steps
        m = step_budgets(count_macs(model, shape), cc.target_macs, cc.steps) if cc.target_macs else [None] * cc.steps
        return [{"target_params": a, "target_macs": b} for a, b in zip(p, m)]
    ratio = cc.ratio if cc.ratio is not None else (0.0 if has_fixed_trunk(model) else DEFAULT_RATIO)
    if not ratio:  # quantize only: no pruning round, no recovery training
        return []
    return [{"ratio": r} for r in step_ratios(ratio, cc.steps)]


def prune_with_recovery(float_model, schedule: list[dict], teacher, tensors, fe: FrontEnd, cc: CompressConfig,
                        floor: float, progress: bool, log) -> tuple[torch.nn.Module, float, list[dict]]:
    from edgetune.compress.prune import prune_model, prune_to_widths

    shape = (1, 1, fe.n_frames, fe.n_mels)
    model, best_acc, steps = copy.deepcopy(float_model), None, []
    for i, kwargs in enumerate(schedule, start=1):
        if "widths" in kwargs:
            candidate = prune_to_widths(model, shape, kwargs["widths"], criterion=cc.criterion)
        else:
            candidate = prune_model(model, shape, criterion=cc.criterion, round_to=cc.round_to, **kwargs)
        trainer = Trainer(candidate, fe, tensors.train, tensors.val,
                          _train_cfg(cc, cc.epochs_per_step, cc.lr), tensors.noise, teacher=teacher,
                          progress=progress)
        candidate = trainer.run()
        record = {"step": i, **candidate_summary(candidate, shape), "val_accuracy": trainer.best_acc}
        if trainer.best_acc < floor:
            record["kept"] = False
            steps.append(record)
            log(f"prune step {i}: val {trainer.best_acc:.4f} under the floor {floor:.4f}; "
                f"stopped, keeping step {i - 1}")
            break
        record["kept"] = True
        steps.append(record)
        log(f"prune step {i}: {record['params']:,} params, val {trainer.best_acc:.4f}")
        model, best_acc = candidate, trainer.best_acc
    return model, best_acc, steps


def calibration_clips(clips: torch.Tensor, seed: int, n: int = 2000) -> torch.Tensor:
    """A seeded random `n` of the training clips, for the int8 activation ranges."""
    order = torch.randperm(len(clips), generator=torch.Generator().manual_seed(seed))
    return clips[order[:n]]


def candidate_summary(model, shape) -> dict:
    from edgetune.nets import count_macs, count_params

    return {"params": count_params(model), "macs": count_macs(model, shape)}


def compress(checkpoint: str | Path, data: str | Path | None = None, out: str | Path | None = None,
             cc: CompressConfig | None = None, command: str = "", progress: bool = False,
             log=print) -> dict:
    from edgetune.compress.qat import SCHEME, calibrate, prepare_qat

    cc = cc or CompressConfig()
    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("quant"):
        raise EdgetuneError(f"{checkpoint}: already quantized; compress the fine-tuned checkpoint")
    if cc.augment is None:  # resolved here, so the recipe records what was used
        cc = dataclasses.replace(cc, augment=finetune_augment(ckpt) or AugmentConfig())
    out = Path(out) if out else checkpoint.parent
    fe = FrontEnd.from_dict(ckpt["frontend"])
    float_model = model_from_checkpoint(ckpt).eval()
    # before any data is read: a schedule the model cannot take (--widths) fails at once
    schedule = _schedule(cc, float_model, (1, 1, fe.n_frames, fe.n_mels))
    try:
        tensors = checkpoint_tensors(ckpt, data, progress=progress)  # every head's data, if merged
    except EdgetuneError as e:
        raise EdgetuneError(f"{checkpoint}: {e}") from None
    data = data or ckpt["meta"].get("data", {}).get("source")
    teacher, taught_by = distillation_teacher(ckpt, float_model, log)
    slices = head_slices(float_model)
    device = resolve_device(cc.device)
    val_feats = features_of(fe, tensors.val.clips, device)
    test_feats = features_of(fe, tensors.test.clips, device)

    def scores(model):
        return (round(accuracy(predict(model, val_feats, device), tensors.val.targets, slices), 4),
                round(accuracy(predict(model, test_feats, device), tensors.test.targets, slices), 4))

    float_val, float_test = scores(float_model.to(device))
    floor = cc.min_accuracy if cc.min_accuracy is not None else float_val - (cc.max_drop or 0.0)
    data_info = {"source": data if isinstance(data, list) else str(data), "fingerprint": tensors.dataset.fingerprint(),
                 "splits": {k: len(getattr(tensors, k).targets) for k in ("train", "val", "test")}}
    recipe = {**dataclasses.asdict(cc), "command": command, "distilled_from": taught_by}

    pruned, _, steps = prune_with_recovery(float_model, schedule, teacher, tensors, fe, cc, floor, progress, log)
    pruned_val, pruned_test = scores(pruned.to(device))
    pruned_ckpt = make_checkpoint(pruned.cpu(), labels=ckpt["labels"], frontend=fe, stage="pruned",
                                  heads=ckpt.get("heads"),
                                  parent=lineage_link(checkpoint, ckpt), data=data_info,
                                  recipe={**recipe, "steps_log": steps},
                                  metrics={"val_accuracy": pruned_val, "test_accuracy": pruned_test})
    if distributed.is_main():
        save_checkpoint(pruned_ckpt, out / PRUNED)

    qat = prepare_qat(pruned.cpu(), fe.n_frames, fe.n_mels)
    calibrate(qat, features_of(fe, calibration_clips(tensors.train.clips, cc.seed), torch.device("cpu")))
    trainer = Trainer(qat, fe, tensors.train, tensors.val, _train_cfg(cc, cc.qat_epochs, cc.qat_lr),
                      tensors.noise, teacher=teacher, progress=progress)
    log(f"qat: calibrated, before training: val {trainer.keep_start()['val_accuracy']:.4f}")
    qat = trainer.run(on_epoch=lambda r: log(f"qat epoch {r['epoch']}: val {r['val_accuracy']:.4f}"))
    qat_val, qat_test = scores(qat.to(device))
    log(f"qat: val {qat_val:.4f} test {qat_test:.4f}")
    result = {"pruned": str(out / PRUNED), "qat": str(out / QAT), "prune_steps": steps, "floor": floor}
    if not distributed.is_main():  # rank 0 writes
        return {**result, "stages": []}
    qat_ckpt = make_checkpoint(qat.cpu(), labels=ckpt["labels"], frontend=fe, stage="qat",
                               heads=ckpt.get("heads"),
                               parent=lineage_link(out / PRUNED, pruned_ckpt), data=data_info,
                               recipe=recipe, quant=SCHEME,
                               metrics={"val_accuracy": qat_val, "test_accuracy": qat_test},
                               extra_meta={"params": pruned_ckpt["meta"]["params"],
                                           "macs": pruned_ckpt["meta"]["macs"]})
    save_checkpoint(qat_ckpt, out / QAT)
    stages = stage_table(ckpt, checkpoint, pruned_ckpt, out / PRUNED, qat_ckpt, out / QAT,
                         {"finetuned": (float_val, float_test)}, tensors, fe, device)
    write_stages(out, stages)
    return {**result, "stages": stages}


def stage_table(ft_ckpt, ft_path, pruned_ckpt, pruned_path, qat_ckpt, qat_path, known, tensors,
                fe, device) -> list[dict]:
    """base -> finetuned -> pruned -> int8 with real exported file sizes."""
    rows = []
    base_path = ft_ckpt["meta"]["recipe"].get("base")
    if base_path and Path(base_path).exists():
        base = load_checkpoint(base_path)
        rows.append(_row("base", base, Path(base_path), ft_ckpt["meta"]["metrics"].get("base_test_accuracy"), None))
    val, test = known["finetuned"]
    rows.append(_row("finetuned", ft_ckpt, ft_path, test, val))
    m = pruned_ckpt["meta"]["metrics"]
    rows.append(_row("pruned", pruned_ckpt, pruned_path, m["test_accuracy"], m["val_accuracy"]))
    m = qat_ckpt["meta"]["metrics"]
    rows.append(_row("int8", qat_ckpt, qat_path, m["test_accuracy"], m["val_accuracy"]))
    return rows


def _row(stage, ckpt, path, test, val) -> dict:
    fp32, int8 = onnx_sizes(path, ckpt)
    return {"stage": stage, "params": ckpt["meta"]["params"], "macs": ckpt["meta"]["macs"],
            "fp32_bytes": fp32, "int8_bytes": int8, "val_accuracy": val, "test_accuracy": test}


def onnx_sizes(path: Path, ckpt: dict) -> tuple[int | None, int | None]:
    """Bytes of the ONNX file this checkpoint exports to (fp32 for float, int8 for QAT)."""
    from edgetune.export import for_export, metadata, output_names, to_onnx, torch_model

    model, _, precision = torch_model(ckpt)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / "m.onnx"
        to_onnx(for_export(model, ckpt), FrontEnd.from_dict(ckpt["frontend"]), tmp,
                metadata(ckpt, precision, []), output_names(ckpt))
        size = tmp.stat().st_size
    return (size, None) if precision == "fp32" else (None, size)


def write_stages(out: Path, stages: list[dict]) -> None:
    write_json_atomic(out / "stages.json", stages)
    (out / "stages.md").write_text(format_stages(stages) + "\n")


def format_stages(stages: list[dict]) -> str:
    def pct(x):
        return "" if x is None else f"{100 * x:.2f}%"

    def kb(x):
        return "" if x is None else f"{x / 1024:.1f} KB"

    lines = ["| stage | params | MACs | fp32 bytes | int8 bytes | val acc | test acc |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for s in stages:
        lines.append(f"| {s['stage']} | {s['params']:,} | {s['macs']:,} | {kb(s['fp32_bytes'])} | "
                     f"{kb(s['int8_bytes'])} | {pct(s['val_accuracy'])} | {pct(s['test_accuracy'])} |")
    return "\n".join(lines)
