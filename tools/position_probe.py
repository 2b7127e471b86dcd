"""Does a model depend on where in the clip the word sits? Score a checkpoint on a split
and group the clips by when their sound starts and ends (the first and last 10 ms frame
within 30 dB of the clip's loudest), so a model that misses words near an edge shows it:

    python tools/position_probe.py runs/cmd/finetuned.pt --data corpus/commands-300

The built-in corpus places each word anywhere in its second (onset drawn per clip), as
a recorder does; real Speech Commands clips do too. `_silence_` clips have no word and
are left out. Prints a table, and writes JSON with --json.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from edgetune.data.augment import loud_span
from edgetune.evaluate import word_clips
from edgetune.frontend import FrontEnd
from edgetune.train.checkpoint import load_checkpoint
from edgetune.train.finetune import eval_checkpoint

LOUD_DB = 30.0
START_BINS = [(0.0, 0.05), (0.05, 0.1), (0.1, 0.2), (0.2, 1.0)]
END_BINS = [(0.0, 0.6), (0.6, 0.8), (0.8, 0.9), (0.9, 0.95), (0.95, 1.01)]


def sound_spans(clips: np.ndarray, sample_rate: int) -> np.ndarray:
    """[clips, samples] -> [clips, 2]: seconds to each clip's first loud 10 ms frame and past
    its last (the span edge-cut augmentation trims to)."""
    start, end = loud_span(torch.from_numpy(clips), sample_rate, torch.full((len(clips),), LOUD_DB))
    return torch.stack([start, end], dim=1).numpy() / sample_rate


def accuracy_by_position(checkpoint: str, data: str, splits: tuple[str, ...]) -> dict:
    ckpt = load_checkpoint(checkpoint)
    _, clips, target = word_clips(ckpt, data, splits)
    right = eval_checkpoint(ckpt, clips, "cpu") == target
    spans = sound_spans(clips, FrontEnd.from_dict(ckpt["frontend"]).sample_rate)

    def table(column: int, bins: list[tuple[float, float]]) -> list[dict]:
        rows = []
        for lo, hi in bins:
            inside = (spans[:, column] >= lo) & (spans[:, column] < hi)
            rows.append({"from_s": lo, "to_s": min(hi, 1.0), "n": int(inside.sum()),
                         "accuracy": float(right[inside].mean()) if inside.any() else None})
        return rows

    return {"checkpoint": checkpoint, "data": data, "splits": list(splits), "n": len(target),
            "accuracy": float(right.mean()), "by_start": table(0, START_BINS), "by_end": table(1, END_BINS)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="A float checkpoint (.pt), such as RUN/finetuned.pt.")
    ap.add_argument("--data", required=True, help="The corpus it was trained on (its held-out voices are scored).")
    ap.add_argument("--splits", default="val,test", help="Comma-separated splits to score [default: val,test].")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = accuracy_by_position(args.checkpoint, args.data, tuple(args.splits.split(",")))
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['checkpoint']}: {100 * result['accuracy']:.1f}% of {result['n']} word clips")
    for key, name in (("by_start", "sound starts"), ("by_end", "sound ends")):
        for row in result[key]:
            acc = "-" if row["accuracy"] is None else f"{100 * row['accuracy']:.1f}%"
            print(f"  {name} {row['from_s']:.2f}-{row['to_s']:.2f} s: {acc:>6} of {row['n']}")


if __name__ == "__main__":
    main()
