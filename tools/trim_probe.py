"""How a model fares on clips trimmed as a silence remover trims a recording.

    python tools/trim_probe.py runs/R/finetuned.pt --data corpus/digits-mb25 --split test

Each word clip of the split (not `_silence_` or `_unknown_`) keeps only the span from its
first to its last 10 ms frame within N dB of its loudest (the span `finetune --edge-cut`
trains on), centred in zeros as a trimmed recording padded to the clip length is. Prints
accuracy and the most common wrong answers per N, and writes OUT (JSON) when given.
Why: the real spoken digits (fsdd_digits) were trimmed so, and a model that never heard a
word without its weak first and last sounds answers the vowel that is left (README, "A
trimmed recording has lost its word's weak edges").
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np


def trimmed(clip: np.ndarray, fe, below_db: float | None) -> np.ndarray:
    """The clip's span within `below_db` of its loudest 10 ms frame, centred in zeros
    (`fit_clip`, as a trimmed recording is padded to the clip length)."""
    if below_db is None:
        return clip
    import torch

    from edgetune.data.augment import loud_span
    from edgetune.frontend import fit_clip

    start, end = loud_span(torch.from_numpy(clip)[None], fe.sample_rate, torch.tensor([float(below_db)]))
    return fit_clip(fe, clip[int(start) : int(end)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--levels", default="none,40,30,20,15", help="dB under the loudest frame; none = as is")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from edgetune.data.dataset import SILENCE, UNKNOWN, ClipLoader, load_dataset
    from edgetune.frontend import FrontEnd
    from edgetune.train.checkpoint import load_checkpoint
    from edgetune.train.finetune import eval_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    fe, labels = FrontEnd.from_dict(ckpt["frontend"]), ckpt["labels"]
    examples = [e for e in load_dataset(args.data, labels=labels).split(args.split)
                if e.label not in (SILENCE, UNKNOWN)]
    clips = ClipLoader(fe).clips(examples)
    truth = np.array([labels.index(e.label) for e in examples])
    rows = []
    for level in args.levels.split(","):
        below = None if level.strip() == "none" else float(level)
        pred = eval_checkpoint(ckpt, np.stack([trimmed(c, fe, below) for c in clips]))
        wrong = collections.Counter(labels[p] for p, t in zip(pred, truth) if p != t)
        rows.append({"below_db": below, "accuracy": round(float((pred == truth).mean()), 4),
                     "wrong_answers": dict(wrong.most_common(3))})
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        from edgetune.files import write_json_atomic

        write_json_atomic(args.out, {"checkpoint": str(args.checkpoint), "data": str(args.data),
                                     "split": args.split, "clips": len(examples), "rows": rows})


if __name__ == "__main__":
    main()
