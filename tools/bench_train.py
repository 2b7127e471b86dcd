"""Training throughput (samples/s) per architecture: the real training step
(waveform augmentation, log-mel, SpecAugment, forward, backward, AdamW) on
random 1-s clips, on this machine's CPU and on CUDA when there is one.

    python tools/bench_train.py [--out bench_train.json] [--steps 10] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from edgetune.frontend import FrontEnd
from edgetune.nets import available_models, count_params, create_model
from edgetune.train.loop import Split, TrainConfig, Trainer


def bench_model(name: str, device: str, steps: int, batch_size: int) -> dict:
    fe = FrontEnd()
    n = steps * batch_size
    g = torch.Generator().manual_seed(0)
    clips = torch.randn(n, fe.clip_samples, generator=g) * 0.1
    targets = torch.randint(0, 12, (n,), generator=g)
    data = Split(clips, targets)
    tiny_val = Split(clips[:8], targets[:8])
    noise = [torch.randn(fe.sample_rate * 10, generator=g) * 0.05]
    model = create_model(name, 12, fe.n_frames, fe.n_mels)
    trainer = Trainer(model, fe, data, tiny_val, TrainConfig(epochs=1, batch_size=batch_size, device=device),
                      noise)
    trainer._step(torch.arange(batch_size))  # warm-up (allocations, cuDNN autotune)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for idx in torch.arange(n).split(batch_size):
        trainer._step(idx)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"model": name, "device": device, "params": count_params(model), "batch_size": batch_size,
            "steps": steps, "samples_per_s": round(n / seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench_train.json")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--models", default=",".join(available_models()))
    args = ap.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = [bench_model(m, d, args.steps, args.batch_size) for d in devices for m in args.models.split(",")]
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
              "results": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
