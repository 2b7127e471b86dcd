"""How much noise can a model take? Score a checkpoint on a split's clips as they are, then
with noise mixed in at each SNR (the clip's power over the noise's, as training mixes it):

    python tools/noise_probe.py runs/cmd/finetuned.pt --data corpus/commands-300 --snr 20,10,5,0

Real recordings (Speech Commands: phones and laptops in rooms) are noisier than the
synthetic test voices, so the clean score overstates them. `--noise white` (default) is
noise no model trained with; `--noise corpus` draws from the corpus's
`_background_noise_/`, which training mixes in too. `_silence_` clips are left out. Seeded:
the same clips get the same noise for every model. Prints a table; --json for one object.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from edgetune.data.dataset import ClipLoader
from edgetune.evaluate import word_clips
from edgetune.frontend import FrontEnd
from edgetune.train.checkpoint import load_checkpoint
from edgetune.train.finetune import eval_checkpoint


def noise_like(clips: np.ndarray, kind: str, files: list[str], fe: FrontEnd, seed: int) -> np.ndarray:
    """One unit-power noise segment per clip: white, or cut from the corpus's noise files."""
    rng = np.random.default_rng(seed)
    if kind == "white":
        noise = rng.standard_normal(clips.shape)
    else:
        if not files:
            raise SystemExit("the dataset has no _background_noise_/ files; use --noise white")
        pool = [ClipLoader(fe).noise(f) for f in files]
        pool = [p for p in pool if len(p) > clips.shape[1]]
        noise = np.stack([p[s : s + clips.shape[1]] for p in (pool[rng.integers(len(pool))] for _ in clips)
                          for s in [rng.integers(len(p) - clips.shape[1] + 1)]])
    return noise / np.sqrt((noise.astype(np.float64) ** 2).mean(axis=1, keepdims=True) + 1e-20)


def at_snr(clips: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    power = (clips.astype(np.float64) ** 2).mean(axis=1, keepdims=True)
    return np.clip(clips + noise * np.sqrt(power / 10 ** (snr_db / 10)), -1, 1).astype(np.float32)


def accuracy_by_snr(checkpoint: str, data: str, splits: tuple[str, ...], snrs: list[float],
                    kind: str = "white", seed: int = 0) -> dict:
    ckpt = load_checkpoint(checkpoint)
    ds, clips, target = word_clips(ckpt, data, splits)
    noise = noise_like(clips, kind, ds.noise_files, FrontEnd.from_dict(ckpt["frontend"]), seed)
    rows = [{"snr_db": None, "accuracy": float((eval_checkpoint(ckpt, clips, "cpu") == target).mean())}]
    for snr in snrs:
        right = eval_checkpoint(ckpt, at_snr(clips, noise, snr), "cpu") == target
        rows.append({"snr_db": snr, "accuracy": float(right.mean())})
    return {"checkpoint": checkpoint, "data": data, "splits": list(splits), "noise": kind,
            "n": len(target), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="A float checkpoint (.pt), such as RUN/finetuned.pt.")
    ap.add_argument("--data", required=True, help="The corpus it was trained on (its held-out voices are scored).")
    ap.add_argument("--splits", default="val,test", help="Comma-separated splits to score [default: val,test].")
    ap.add_argument("--snr", default="20,10,5,0", help="Comma-separated SNRs in dB [default: 20,10,5,0].")
    ap.add_argument("--noise", choices=["white", "corpus"], default="white")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = accuracy_by_snr(args.checkpoint, args.data, tuple(args.splits.split(",")),
                             [float(s) for s in args.snr.split(",")], args.noise, args.seed)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['checkpoint']}: {result['n']} word clips, {result['noise']} noise")
    for row in result["rows"]:
        where = "clean" if row["snr_db"] is None else f"{row['snr_db']:g} dB SNR"
        print(f"  {where:>10}: {100 * row['accuracy']:.1f}%")


if __name__ == "__main__":
    main()
