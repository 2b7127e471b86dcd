"""Training on several processes with PyTorch's own engine (torchrun + DDP).

`edgetune finetune|compress` run unchanged under `torchrun --nproc-per-node N`
(multi-node with torchrun's usual rendezvous options): each process trains on
its shard of every epoch's shuffled order, gradients are averaged by
DistributedDataParallel, training loss/accuracy are averaged across ranks, and
only rank 0 writes checkpoints, logs and reports. NCCL on GPUs, gloo on CPU.
`--nproc N` launches torchrun for the user.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch
import torch.distributed as dist


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def active() -> bool:
    return world_size() > 1


def setup(device_name: str) -> str:
    """Join the process group when launched by torchrun; returns the device for this rank."""
    if not active():
        return device_name
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu"


def shard(order: torch.Tensor) -> torch.Tensor:
    """This rank's slice of an epoch's order; every rank gets the same count (tail dropped)."""
    if not active():
        return order
    n = len(order) - len(order) % world_size()
    return order[:n][rank() :: world_size()]


def mean_across_ranks(values: list[float]) -> list[float]:
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return (t / world_size()).tolist()


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def launch(nproc: int, argv: list[str]) -> int:
    """Re-run this edgetune command under torchrun with `nproc` processes on this machine."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "edgetune", *argv]
    return subprocess.call(cmd)


def strip_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out
