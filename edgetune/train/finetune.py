"""`edgetune finetune`: adapt a base model (or a fresh one) to a dataset's labels.

Reads a dataset and optionally a base checkpoint; writes RUN/finetuned.pt,
RUN/log.jsonl, RUN/config.json. Reports the base model's accuracy on the same
test split before training (where its labels cover the task), and optionally a
from-scratch model trained with the same budget, so the gain is measured.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgetune.data.dataset import ClipLoader, Dataset, dataset_cmn, dataset_frontend, load_dataset
from edgetune.errors import DataError, EdgetuneError
from edgetune.files import write_json_atomic
from edgetune.frontend import FrontEnd, with_current_floor
from edgetune.train import distributed
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
    resolve_device,
    use_all_cores,
)

TRAIN_STATE = "train_state.pt"


@dataclass
class DataTensors:
    dataset: Dataset
    train: Split
    val: Split
    test: Split
    noise: list[torch.Tensor]


def load_tensors(data: str | Path, fe: FrontEnd, labels: list[str] | None = None,
                 progress: bool = False) -> DataTensors:
    ds = load_dataset(data, labels=labels)
    loader = ClipLoader(fe)
    index = {lab: i for i, lab in enumerate(ds.labels)}
    splits = {}
    for name in ("train", "val", "test"):
        examples = ds.split(name)
        if not examples and name != "test":
            raise DataError(f"{data}: the {name} split is empty; add more speakers or a "
                            f"{'validation' if name == 'val' else name}_list.txt")
        clips = loader.clips(examples, progress=progress)
        targets = torch.tensor([index[e.label] for e in examples], dtype=torch.long)
        splits[name] = Split(torch.from_numpy(clips), targets)
    noise = [torch.from_numpy(loader.noise(p)) for p in ds.noise_files]
    return DataTensors(ds, splits["train"], splits["val"], splits["test"], noise)


def adapt_head(base: torch.nn.Module, base_labels: list[str], labels: list[str],
               fe: FrontEnd, cmn: bool | None = None) -> torch.nn.Module:
    """A copy of `base` with a classifier for `labels`; rows of labels the base knows carried
    over. `cmn` turns the input's band-mean removal on or off (None: as the base has it)."""
    from edgetune.nets import create_model

    arch_config = base.arch_config if cmn is None else {**base.arch_config, "cmn": cmn}
    model = create_model(base.arch, n_classes=len(labels), n_frames=fe.n_frames,
                         n_mels=fe.n_mels, **arch_config)
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("classifier.")}
    model.load_state_dict(state, strict=False)
    old, new = base.classifier, model.classifier
    with torch.no_grad():
        for i, lab in enumerate(labels):
            if lab in base_labels:
                j = base_labels.index(lab)
                new.weight[i] = old.weight[j]
                new.bias[i] = old.bias[j]
    return model


def restricted_report(model, base_labels: list[str], labels: list[str], feats, targets, device):
    """The base model on the task's test split, out of the box (a classification report).

    Task labels the base knows keep their rows; when the task has `_unknown_` and the
    base lacks it, the base answering any word outside the task counts as `_unknown_`.
    None when the base cannot express some task label."""
    from edgetune.data.dataset import UNKNOWN
    from edgetune.metrics import classification_report

    collapse_unknown = UNKNOWN in labels and UNKNOWN not in base_labels
    needed = set(labels) - ({UNKNOWN} if collapse_unknown else set())
    if not needed <= set(base_labels) or not len(targets):
        return None
    base_pred = predict(model, feats, device)
    if collapse_unknown:
        index = {lab: i for i, lab in enumerate(labels)}
        mapped = [index.get(lab, index[UNKNOWN]) for lab in base_labels]
        predicted = torch.tensor(mapped)[base_pred.argmax(1)]
    else:
        predicted = base_pred[:, [base_labels.index(lab) for lab in labels]].argmax(1)
    return classification_report(targets.numpy(), predicted.numpy(), labels)


def finetune(data: str | Path, out: str | Path, *, base: str | Path | None = None,
             model_name: str | None = None, cfg: TrainConfig | None = None,
             teacher: str | Path | None = None, resume: bool = False, scratch_baseline: bool = False,
             command: str = "", progress: bool = False, on_epoch=None,
             stage: str = "finetuned", cmn: bool | None = None) -> dict:
    """Fine-tune `base` (or train `model_name` from scratch) on `data`; writes OUT/STAGE.pt.

    `cmn`: remove each mel band's mean inside the model (nets/inputs.py); None: `resolve_cmn`."""
    cfg = cfg or TrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    use_all_cores()
    torch.manual_seed(cfg.seed)  # the new head's (or fresh model's) initial weights
    base_ckpt = load_checkpoint(base) if base else None
    # a base fixes the front end (its input shape); a fresh model takes the one the data asks for
    fe = FrontEnd.from_dict(base_ckpt["frontend"]) if base_ckpt else dataset_frontend(data) or FrontEnd()
    fe = with_current_floor(fe)  # a base (or corpus) from before LOG_FLOOR
    cmn = resolve_cmn(cmn, data, base_ckpt, fe)
    tensors = load_tensors(data, fe, progress=progress)
    labels = tensors.dataset.labels
    device = resolve_device(cfg.device)
    test_feats = features_of(fe, tensors.test.clips, device)

    if base_ckpt:
        base_model = model_from_checkpoint(base_ckpt)
        before_report = restricted_report(base_model, base_ckpt["labels"], labels, test_feats,
                                          tensors.test.targets, device)
        if before_report and distributed.is_main():
            write_json_atomic(out / "verify-base.json", {**before_report, "model": str(base),
                                                   "split": "test", "precision": "fp32"})
        before = before_report["accuracy"] if before_report else None
        model = adapt_head(base_model, base_ckpt["labels"], labels, fe, cmn)
        parent = lineage_link(base, base_ckpt)
    else:
        if not model_name:
            raise EdgetuneError("give --base models/NAME.pt to fine-tune, or --model NAME to train from scratch")
        model, before, parent = fresh_model(model_name, labels, fe, cmn), None, None

    cfg = masks_only_if_learnable(cfg, model)
    teacher_model = _teacher(teacher, labels)
    trainer = Trainer(model, fe, tensors.train, tensors.val, cfg, tensors.noise, teacher=teacher_model,
                      log_path=out / "log.jsonl", state_path=out / TRAIN_STATE, progress=progress)
    if resume and (out / TRAIN_STATE).exists():
        trainer.load_state(torch.load(out / TRAIN_STATE, weights_only=True)["train_state"])
    elif (out / "log.jsonl").exists():
        (out / "log.jsonl").unlink()
    best = trainer.run(on_epoch=on_epoch)
    test_acc = accuracy(predict(best, test_feats, torch.device("cpu")), tensors.test.targets)

    metrics = {"val_accuracy": round(trainer.best_acc, 4), "test_accuracy": round(test_acc, 4),
               "base_test_accuracy": None if before is None else round(before, 4)}
    if scratch_baseline:
        metrics["scratch_test_accuracy"] = round(_scratch(best, labels, fe, tensors, cfg, test_feats, progress), 4)
    data_info = {"source": str(data), "fingerprint": tensors.dataset.fingerprint(),
                 "splits": {k: len(getattr(tensors, k).targets) for k in ("train", "val", "test")}}
    ckpt = make_checkpoint(best, labels=labels, frontend=fe, stage=stage, parent=parent,
                           data=data_info, recipe={**cfg.to_dict(), "command": command,
                                                   "base": str(base) if base else None},
                           metrics=metrics)
    if distributed.is_main():
        save_checkpoint(ckpt, out / f"{stage}.pt")
        (out / TRAIN_STATE).unlink(missing_ok=True)
        write_json_atomic(out / "config.json", {"command": command, "data": str(data), "base": str(base) if base else None,
                                          "model": model_name, "train": cfg.to_dict(),
                                          "processes": distributed.world_size()})
    return {"checkpoint": str(out / f"{stage}.pt"), "labels": labels, **metrics,
            "params": ckpt["meta"]["params"], "macs": ckpt["meta"]["macs"], "epochs": trainer.epoch,
            "history": trainer.history}


def masks_only_if_learnable(cfg: TrainConfig, model: torch.nn.Module) -> TrainConfig:
    """SpecAugment's masks blank bands and frames; a network learns to see past them, but a
    frozen trunk (sembed's) cannot, and its head then learns from embeddings of inputs the
    trunk never saw. Measured on corpus/digits-600, seed 0: synthetic validation 86.9% with
    the masks, 91.8% without (README, "A trunk that has heard real people")."""
    if getattr(model, "learns_through_masks", True):
        return cfg
    return dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, freq_masks=0, time_masks=0))


def resolve_cmn(asked: bool | None, data: str | Path, base_ckpt: dict | None, fe: FrontEnd) -> bool:
    """Band-mean removal, the first answer that exists: as asked; as the dataset asks (its
    corpus.json: the vowels corpus says no); as a base fine-tuned since the choice existed
    has it (a user's own takes on top of a vowels model stay without); else `wants_cmn`."""
    if asked is not None:
        return asked
    if fe.mel_scale == "slaney":  # the speech embedding's trunk was trained on absolute levels
        return False
    from_data = dataset_cmn(data)
    if from_data is not None:
        return from_data
    if base_ckpt and "cmn" in base_ckpt["arch_config"]:
        return bool(base_ckpt["arch_config"]["cmn"])
    return wants_cmn(fe)


def wants_cmn(fe: FrontEnd) -> bool:
    """Band-mean removal by default for speech (words are short and a microphone's colour is
    not the word), not for the music front end: a held note fills the window, and its
    bands' means are the note."""
    music = with_current_floor(FrontEnd.preset("music"))
    return dataclasses.replace(fe, log_floor=music.log_floor) != music


def fresh_model(name: str, labels: list[str], fe: FrontEnd, cmn: bool = False) -> torch.nn.Module:
    from edgetune.nets import available_models, create_model

    if name not in available_models():
        raise EdgetuneError(f"unknown model {name!r}; choose one of {', '.join(available_models())}")
    if name == "sembed":
        raise EdgetuneError("sembed's trunk is Google's, trained on real speech; random weights would "
                            "waste it: fine-tune with --base models/sembed.pt")
    return create_model(name, n_classes=len(labels), n_frames=fe.n_frames, n_mels=fe.n_mels, cmn=cmn)


def _teacher(path, labels):
    if not path:
        return None
    ckpt = load_checkpoint(path)
    if ckpt["labels"] != labels:
        raise EdgetuneError(f"{path}: the teacher's labels {ckpt['labels']} differ from the data's "
                            f"{labels}; distil from a model fine-tuned on this dataset")
    return model_from_checkpoint(ckpt)


def _scratch(like, labels, fe, tensors, cfg, test_feats, progress) -> float:
    """The same architecture from random weights, with the same data and budget."""
    from edgetune.nets import create_model

    torch.manual_seed(cfg.seed)
    model = create_model(like.arch, n_classes=len(labels), n_frames=fe.n_frames, n_mels=fe.n_mels,
                         **like.arch_config)
    scratch_cfg = TrainConfig.from_dict({**cfg.to_dict(), "freeze": 0, "conv_lr_scale": 1.0})
    best = Trainer(model, fe, tensors.train, tensors.val, scratch_cfg, tensors.noise,
                   progress=progress).run()
    return accuracy(predict(best, test_feats, torch.device("cpu")), tensors.test.targets)


def eval_checkpoint(ckpt: dict, clips: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Predicted class indices for [N, samples] clips through the host front end."""
    fe = FrontEnd.from_dict(ckpt["frontend"])
    dev = resolve_device(device)
    feats = features_of(fe, torch.from_numpy(clips), dev)
    if ckpt.get("quant"):  # the QAT model, int8 simulated
        from edgetune.compress.qat import qat_model_from_checkpoint

        model = qat_model_from_checkpoint(ckpt).to(dev)
    else:
        model = model_from_checkpoint(ckpt).to(dev)
    return predict(model, feats, dev).argmax(1).numpy()
