"""Which fine-tuning recipe makes the shipped base recognise real people? Fine-tune
the base on a built-in corpus with recipe variants, over several seeds, and score
each on a real labelled folder (never trained on, never used to choose an epoch).

    python tools/finetune_real.py --data corpus/digits --seeds 0,1,2 \\
        --variants "light;light,no-cmn;light,tempo=1:1;light,speed=0.85:1.15"

A variant is an augmentation preset followed by changes: `no-cmn` (keep the input's band
means), any AugmentConfig field, `NAME=V` or `NAME=LO:HI` for a range (`tempo=1:1`,
`shift_ms=300`), any numeric TrainConfig field but the seed (`lr=0.001`, `epochs=40`), and
`adversarial=fgsm` or `=pgd` (with `epsilon=0.5`). Each run is what
`edgetune finetune --base BASE --data DATA --augment PRESET --seed N` does, then
`edgetune evaluate RUN/finetuned.pt --data REAL --split all`. Runs already in
OUT/results.json are kept, so a stopped ablation resumes. Writes OUT/results.{json,md}.
One run takes ~10 minutes on one CPU core for the 3300-clip digits corpus.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from eval_real import REAL_DEFAULT, ROOT, mix_slug  # tools/ is on the path when run as a script


def parse_variant(text: str):
    """`light,no-cmn,tempo=0.6:1.6,lr=0.001` -> (AugmentConfig, cmn, training changes);
    cmn None unless `no-cmn`: decided as `edgetune finetune` decides it (resolve_cmn)."""
    from edgetune.data.augment import AugmentConfig
    from edgetune.train.loop import TrainConfig

    preset, *changes = [part.strip() for part in text.split(",")]
    aug, cmn, training = AugmentConfig.preset(preset), None, {}
    aug_fields = [f.name for f in dataclasses.fields(AugmentConfig)]
    defaults = TrainConfig()
    numbers = [f.name for f in dataclasses.fields(TrainConfig)
               if type(getattr(defaults, f.name)) in (int, float) and f.name != "seed"]  # --seeds gives it
    words = ["adversarial"]  # fgsm | pgd
    train_fields = numbers + words
    for change in changes:
        if change == "no-cmn":
            cmn = False
            continue
        name, _, value = change.partition("=")
        if name in train_fields and value:
            training[name] = value if name in words else type(getattr(defaults, name))(float(value))
            continue
        if name not in aug_fields or not value:
            sys.exit(f"error: unknown change {change!r}; use no-cmn, an AugmentConfig field: "
                     f"{', '.join(aug_fields)} (=V, or =LO:HI for a range), or a TrainConfig "
                     f"number: {', '.join(train_fields)}")
        numbers = tuple(float(v) for v in value.split(":"))
        setting = numbers if len(numbers) == 2 else type(getattr(aug, name))(numbers[0])  # ints stay int
        aug = dataclasses.replace(aug, **{name: setting})
    return aug, cmn, training


def run_one(args, variant: str, seed: int, folder: Path) -> dict:
    from edgetune.evaluate import evaluate
    from edgetune.train.finetune import finetune
    from edgetune.train.loop import TrainConfig

    aug, cmn, training = parse_variant(variant)
    cfg = dataclasses.replace(TrainConfig(epochs=args.epochs, seed=seed, augment=aug), **training)
    start = {"model_name": args.model} if args.model else {"base": args.base}
    trained = finetune(args.data, folder, cfg=cfg, cmn=cmn, command=" ".join(sys.argv), **start)
    real = evaluate(folder / "finetuned.pt", args.real, split="all")
    return {"variant": variant, "seed": seed, "real_accuracy": round(real["accuracy"], 4),
            "test_accuracy": trained["test_accuracy"], "val_accuracy": trained["val_accuracy"]}


def markdown(runs: list[dict], seeds: list[int], real: Path) -> str:
    lines = [f"Real: `{real}` (all clips); synthetic: the corpus's test voices.", "",
             "| variant | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | synthetic test |",
             "|---|" + "---:|" * (len(seeds) + 2)]
    for variant in dict.fromkeys(r["variant"] for r in runs):
        by_seed = {r["seed"]: r for r in runs if r["variant"] == variant}
        cells = [f"{100 * by_seed[s]['real_accuracy']:.1f}" if s in by_seed else "" for s in seeds]
        reals = [r["real_accuracy"] for r in by_seed.values()]
        tests = [r["test_accuracy"] for r in by_seed.values()]
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {100 * sum(reals) / len(reals):.1f}"
                     f" | {100 * min(tests):.1f}-{100 * max(tests):.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="A built-in corpus (edgetune data synth).")
    ap.add_argument("--base", type=Path, default=ROOT / "models" / "dscnn-s.pt")
    ap.add_argument("--model", help="Train this architecture from scratch instead of fine-tuning "
                                    "--base (edgetune models lists them), e.g. bcresnet-3.")
    ap.add_argument("--real", type=Path, default=REAL_DEFAULT)
    ap.add_argument("--variants", default="light", help="Semicolon-separated variants.")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("runs") / "finetune_real")
    args = ap.parse_args()
    if not args.real.exists():
        sys.exit(f"error: {args.real}: no such folder; give --real DIR (a labelled folder of real clips)")

    from edgetune.files import write_json_atomic, write_text_atomic

    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [v.strip() for v in args.variants.split(";") if v.strip()]
    for v in variants:
        parse_variant(v)  # a typo stops the ablation before the first hour, not after it
    results_path = args.out / "results.json"
    runs = json.loads(results_path.read_text())["runs"] if results_path.exists() else []
    for variant in variants:
        for seed in seeds:
            if any(r["variant"] == variant and r["seed"] == seed for r in runs):
                continue
            run = run_one(args, variant, seed, args.out / f"{mix_slug(variant)}-s{seed}")
            print(json.dumps(run), flush=True)
            runs.append(run)
            write_json_atomic(results_path, {"data": str(args.data), "base": args.model or str(args.base),
                                             "real": str(args.real), "runs": runs})
    shown = [r for r in runs if r["variant"] in variants]
    # every seed on record, not only this call's: a second call adding seed 1 shows seed 0 too
    table = markdown(shown, sorted({r["seed"] for r in shown}), args.real)
    write_text_atomic(args.out / "results.md", table)
    print(table)


if __name__ == "__main__":
    main()
