"""The training loop: AdamW, warm-up + cosine, label smoothing, optional distillation
and adversarial examples; CUDA with mixed precision when present; seeded; resumable.

Clips live in memory as one [N, samples] tensor; each batch is augmented as
waveforms, turned into log-mel on the training device, then SpecAugment-masked.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgetune.data.augment import AugmentConfig, Augmenter
from edgetune.frontend import FrontEnd
from edgetune.nets.multihead import head_slices
from edgetune.train import distributed
from edgetune.train.checkpoint import cpu_state
from edgetune.train.features import LogMel


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-2
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    conv_lr_scale: float = 1.0  # learning rate of everything but the head, relative to lr
    freeze: int = 0  # first N blocks of model.blocks kept fixed
    distill_alpha: float = 0.5  # weight of the teacher's soft labels when a teacher is given
    distill_temperature: float = 2.0
    adversarial: str | None = None  # "fgsm" | "pgd" on the log-mel input
    epsilon: float = 0.5  # log-mel units (natural log of power)
    pgd_steps: int = 3
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    device: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        aug = d.pop("augment", None)
        return cls(**d, augment=AugmentConfig(**aug) if aug else AugmentConfig())


@dataclass
class Split:
    clips: torch.Tensor  # [N, samples] float32
    targets: torch.Tensor  # [N] int64


def use_all_cores() -> None:
    """One intra-op thread per core, unless OMP_NUM_THREADS says otherwise (on a shared
    machine, more threads than free cores make every op wait for the slowest thread)."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(os.cpu_count() or 1, 1))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        from edgetune.errors import EdgetuneError

        raise EdgetuneError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """Head at lr, the rest at lr * conv_lr_scale; frozen blocks left out."""
    if cfg.freeze == 0 and cfg.conv_lr_scale == 1.0:  # also for graphs without named blocks (QAT)
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}]
    frozen = {id(p) for block in list(model.blocks)[: cfg.freeze] for p in block.parameters()}
    head = {id(p) for p in model.classifier.parameters()}
    groups = {"head": [], "body": []}
    for p in model.parameters():
        if id(p) in frozen:
            p.requires_grad_(False)
        elif p.requires_grad:
            groups["head" if id(p) in head else "body"].append(p)
    out = [{"params": groups["head"], "lr": cfg.lr}]
    if groups["body"]:
        out.append({"params": groups["body"], "lr": cfg.lr * cfg.conv_lr_scale})
    return out


def set_frozen_eval(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Frozen blocks keep their batch-norm statistics too."""
    if cfg.freeze == 0:
        return
    for block in list(model.blocks)[: cfg.freeze]:
        block.eval()


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


@torch.no_grad()
def predict(model: torch.nn.Module, features: torch.Tensor, device: torch.device,
            batch_size: int = 256) -> torch.Tensor:
    """Logits for precomputed features, on CPU."""
    model.eval()
    out = [model(features[i : i + batch_size].to(device)).float().cpu()
           for i in range(0, len(features), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def features_of(fe: FrontEnd, clips: torch.Tensor, device: torch.device,
                batch_size: int = 512) -> torch.Tensor:
    logmel = LogMel(fe).to(device)
    return torch.cat([logmel(clips[i : i + batch_size].to(device)).cpu()
                      for i in range(0, len(clips), batch_size)])


def predicted(logits: torch.Tensor, targets: torch.Tensor, slices=None) -> torch.Tensor:
    """Predicted classes; with head slices (a multi-head model), each clip is answered by
    the head its target belongs to."""
    if slices is None:
        return logits.argmax(1)
    out = torch.full_like(targets, -1)
    for start, end in slices:
        mine = (targets >= start) & (targets < end)
        out[mine] = logits[mine, start:end].argmax(1) + start
    return out


def accuracy(logits: torch.Tensor, targets: torch.Tensor, slices=None) -> float:
    """Top-1 accuracy; for a multi-head model the mean of the heads' accuracies, so a task
    with fewer clips counts as much as the others (model selection, pruning floors)."""
    if not len(targets):
        return float("nan")
    right = (predicted(logits, targets, slices) == targets).float()
    if slices is None:
        return float(right.mean())
    per_head = [right[(targets >= a) & (targets < b)] for a, b in slices]
    return float(torch.stack([r.mean() for r in per_head if len(r)]).mean())


def balanced_order(targets: torch.Tensor, slices, generator: torch.Generator) -> torch.Tensor:
    """One epoch's clip order in which every head's clips fill an equal share (the
    epoch keeps its length): a small task is drawn again, a large one sampled, without
    repeats inside a task until all its clips have been drawn."""
    groups = [((targets >= a) & (targets < b)).nonzero()[:, 0] for a, b in slices]
    groups = [g for g in groups if len(g)]
    share = len(targets) // len(groups)
    picks = []
    for g in groups:
        cycles = -(-share // len(g))
        order = torch.cat([g[torch.randperm(len(g), generator=generator)] for _ in range(cycles)])
        picks.append(order[:share])
    order = torch.cat(picks)
    return order[torch.randperm(len(order), generator=generator)]


def hard_loss(logits: torch.Tensor, y: torch.Tensor, slices, smoothing: float) -> torch.Tensor:
    """Cross-entropy; for a multi-head model each clip trains only its own head."""
    if slices is None:
        return F.cross_entropy(logits, y, label_smoothing=smoothing)
    total = logits.new_zeros(())
    for start, end in slices:
        mine = (y >= start) & (y < end)
        if mine.any():
            total = total + F.cross_entropy(logits[mine, start:end].float(), y[mine] - start,
                                            label_smoothing=smoothing, reduction="sum")
    return total / len(y)


def soft_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, slices, t: float) -> torch.Tensor:
    """Distillation (KL to the teacher's softened answer), each head on its own columns."""
    total = logits.new_zeros(())
    for start, end in slices or [(0, logits.shape[1])]:
        soft = F.softmax(teacher_logits[:, start:end].float() / t, dim=1)
        total = total + F.kl_div(F.log_softmax(logits[:, start:end].float() / t, dim=1), soft,
                                 reduction="batchmean")
    return total * t * t


class Trainer:
    """Fits `model` on in-memory clips; `run()` returns the best model by validation accuracy."""

    def __init__(self, model, fe: FrontEnd, train: Split, val: Split, cfg: TrainConfig,
                 noise: list[torch.Tensor], teacher=None, log_path: Path | None = None,
                 state_path: Path | None = None, progress: bool = False):
        torch.manual_seed(cfg.seed)
        self.cfg, self.fe, self.train, self.progress = cfg, fe, train, progress
        self.device = resolve_device(distributed.setup(cfg.device))
        self.model = model.to(self.device)
        self.slices = head_slices(model)  # None unless several heads share the model
        self.trained = distributed.wrap(self.model, self.device)  # DDP under torchrun, else the model
        self.teacher = teacher.to(self.device).eval() if teacher is not None else None
        self.logmel = LogMel(fe).to(self.device)
        self.val_features = features_of(fe, val.clips, self.device)
        self.val_targets = val.targets
        # Ranks see different clips, and different augmentation draws too.
        self.augment = Augmenter(cfg.augment, fe.sample_rate, noise, seed=cfg.seed + 1000 * distributed.rank())
        self.shuffle = torch.Generator().manual_seed(cfg.seed + 1)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, cfg), weight_decay=cfg.weight_decay)
        steps_per_epoch = max(math.ceil(len(train.targets) / cfg.batch_size), 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(
            cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)))
        self.amp = self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.log_path, self.state_path = log_path, state_path
        self.epoch, self.best_acc, self.best_state, self.history = 0, -1.0, None, []

    # -- one step ---------------------------------------------------------
    def _loss(self, feats: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(self.device.type, enabled=self.amp):
            logits = self.trained(feats)
            loss = hard_loss(logits, y, self.slices, self.cfg.label_smoothing)
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_logits = self.teacher(feats)
                kd = soft_loss(logits, teacher_logits, self.slices, self.cfg.distill_temperature)
                loss = (1 - self.cfg.distill_alpha) * loss + self.cfg.distill_alpha * kd
        return loss, logits

    def _adversarial(self, feats: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """FGSM (one step) or PGD (several, projected) perturbation of the features."""
        eps, steps = self.cfg.epsilon, (1 if self.cfg.adversarial == "fgsm" else self.cfg.pgd_steps)
        step_size = eps if steps == 1 else 2.5 * eps / steps
        adv = feats.detach().clone()
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = hard_loss(self.model(adv), y, self.slices, 0.0)
            (grad,) = torch.autograd.grad(loss, adv)
            adv = (adv.detach() + step_size * grad.sign())
            adv = feats + (adv - feats).clamp(-eps, eps)
        return adv.detach()

    def _step(self, idx: torch.Tensor) -> tuple[float, float]:
        x = self.augment.waveform(self.train.clips[idx].to(self.device))
        y = self.train.targets[idx].to(self.device)
        with torch.no_grad():
            feats = self.augment.features(self.logmel(x))
        if self.cfg.adversarial:
            feats = torch.cat([feats, self._adversarial(feats, y)])
            y = torch.cat([y, y])
        loss, logits = self._loss(feats, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach()), accuracy(logits.detach(), y, self.slices)

    # -- epochs -----------------------------------------------------------
    def run_epoch(self) -> dict:
        self.trained.train()
        set_frozen_eval(self.model, self.cfg)
        # Every rank draws the same order (same seed) and trains on its own shard of it;
        # the global batch stays cfg.batch_size.
        # A multi-head model sees each task equally often (a merge's union is lopsided).
        order = (torch.randperm(len(self.train.targets), generator=self.shuffle) if self.slices is None
                 else balanced_order(self.train.targets, self.slices, self.shuffle))
        order = distributed.shard(order)
        batches = list(order.split(max(self.cfg.batch_size // distributed.world_size(), 1)))
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(batches), desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}",
                       unit="batch", leave=False)
        losses, accs, t0 = [], [], time.time()
        for idx in batches:
            loss, acc = self._step(idx)
            losses.append(loss)
            accs.append(acc)
            if bar:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", acc=f"{np.mean(accs[-20:]):.3f}")
                bar.update()
        if bar:
            bar.close()
        val_acc = accuracy(predict(self.model, self.val_features, self.device), self.val_targets, self.slices)
        self.epoch += 1
        loss, acc = distributed.mean_across_ranks([float(np.mean(losses)), float(np.mean(accs))])
        return {"epoch": self.epoch, "train_loss": round(loss, 4),
                "train_accuracy": round(acc, 4), "val_accuracy": round(val_acc, 4),
                "seconds": round(time.time() - t0, 2),
                "samples_per_s": round(len(order) * distributed.world_size() / max(time.time() - t0, 1e-9), 1)}

    def keep_start(self) -> dict:
        """Score the model as it is now and keep it as epoch 0, so `run()` returns it unless
        an epoch beats it on validation (QAT from calibrated ranges can only gain)."""
        val_acc = accuracy(predict(self.model, self.val_features, self.device), self.val_targets, self.slices)
        self.best_acc = val_acc
        self.best_state = cpu_state(self.model)
        record = {"epoch": 0, "val_accuracy": round(val_acc, 4), "best_val_accuracy": val_acc}
        self.history.append(record)
        return record

    def run(self, on_epoch: Callable[[dict], None] | None = None) -> torch.nn.Module:
        while self.epoch < self.cfg.epochs:
            record = self.run_epoch()
            if record["val_accuracy"] > self.best_acc or self.best_state is None:
                self.best_acc = record["val_accuracy"]
                self.best_state = cpu_state(self.model)
            record["best_val_accuracy"] = self.best_acc
            self.history.append(record)
            if self.log_path and distributed.is_main():
                with open(self.log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            if self.state_path and distributed.is_main():
                self.save_state(self.state_path)
            if on_epoch:
                on_epoch(record)
        best = copy.deepcopy(self.model).cpu()
        best.load_state_dict(self.best_state)
        return best.eval()

    # -- resume -----------------------------------------------------------
    def state(self) -> dict:
        return {
            "epoch": self.epoch, "best_acc": self.best_acc, "history": self.history,
            "model": cpu_state(self.model),
            "best_state": self.best_state,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {"augment": self.augment.g.get_state(), "shuffle": self.shuffle.get_state(),
                    "torch": torch.get_rng_state()},
        }

    def save_state(self, path: Path) -> None:
        from edgetune.train.checkpoint import atomic_torch_save

        atomic_torch_save({"format": "edgetune.trainstate/1", "train_state": self.state()}, path)

    def load_state(self, state: dict) -> None:
        self.epoch, self.best_acc, self.history = state["epoch"], state["best_acc"], state["history"]
        self.model.load_state_dict(state["model"])
        self.best_state = state["best_state"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.augment.g.set_state(state["rng"]["augment"])
        self.shuffle.set_state(state["rng"]["shuffle"])
        torch.set_rng_state(state["rng"]["torch"])
