"""Make a shipped base model: train an architecture from scratch on the built-in
`all` corpus (every command word, digit, vowel and ~45 other words as classes),
then write models/<name>.pt and its model card models/<name>.md.

    python tools/pretrain_base.py --model dscnn-s --epochs 20
    python tools/pretrain_base.py --model dscnn-s --real ../shared/realdata/fsdd_digits

Everything in the card is measured here: synthetic val/test accuracy on voices
the model never trained on, and (with --real) accuracy on a real labelled
folder restricted to the labels it has (never used for training or selection).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from edgetune.paths import REPO_MODELS, corpus_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dscnn-s")
    ap.add_argument("--corpus", type=Path, default=corpus_dir("all"))
    ap.add_argument("--clips-per-word", type=int, default=120)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--augment", default="light", choices=["light", "default", "strong"],
                    help="Augmentation preset (edgetune.data.augment.AugmentConfig).")
    ap.add_argument("--engines", default=None, help="Engine mix of the corpus [default: the corpus default].")
    ap.add_argument("--real", type=Path, help="A real labelled folder to score on (never trained on).")
    ap.add_argument("--out", type=Path, default=REPO_MODELS)
    ap.add_argument("--work", type=Path, default=Path("runs") / "pretrain")
    args = ap.parse_args()

    from edgetune.data.augment import AugmentConfig
    from edgetune.data.synth.corpus import DEFAULT_ENGINES, build_corpus
    from edgetune.evaluate import evaluate
    from edgetune.train.finetune import finetune
    from edgetune.train.loop import TrainConfig

    t0 = time.time()
    args.engines = args.engines or DEFAULT_ENGINES
    corpus = build_corpus(args.corpus, "all", clips_per_word=args.clips_per_word, seed=args.seed,
                          engines=args.engines, progress=sys.stderr.isatty())
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      device=args.device, augment=AugmentConfig.preset(args.augment))
    work = args.work / args.model
    result = finetune(args.corpus, work, model_name=args.model, cfg=cfg, stage="base",
                      command=" ".join(sys.argv), progress=sys.stderr.isatty(),
                      on_epoch=lambda r: print(json.dumps(r), flush=True))
    real = None
    if args.real and args.real.exists():
        real = evaluate(work / "base.pt", args.real, split="all")
        print(f"real ({args.real}): accuracy {real['accuracy']:.4f} on {real['n']} clips", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"{args.model}.pt"
    shutil.copyfile(work / "base.pt", target)
    card = model_card(args, target, result, corpus, real, time.time() - t0)
    (args.out / f"{args.model}.md").write_text(card)
    print(card)


def model_card(args, path: Path, result: dict, corpus: dict, real: dict | None, seconds: float) -> str:
    from edgetune.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    meta = ckpt["meta"]
    splits = meta["data"]["splits"]
    lines = [
        f"# {args.model} base model (`models/{path.name}`)",
        "",
        (f"A {ckpt['arch']} trained from scratch on edgetune's built-in **synthetic** speech corpus, "
        f"to be fine-tuned with `edgetune finetune --base models/{path.name}`."),
        "",
        "| | |",
        "|---|---|",
        f"| labels | {len(ckpt['labels'])}: {', '.join(ckpt['labels'])} |",
        f"| params | {meta['params']:,} |",
        f"| MACs per 1 s clip | {meta['macs']:,} |",
        f"| file size | {path.stat().st_size / 1024:.0f} KB |",
        (f"| front end | {ckpt['frontend']['n_mels']} log-mel bands, {ckpt['frontend']['window_ms']:g} ms window, "
        f"{ckpt['frontend']['hop_ms']:g} ms hop, {ckpt['frontend']['clip_seconds']:g} s clips |"),
        "",
        "## Data (synthetic)",
        (f"`edgetune data synth --task all --clips-per-word {args.clips_per_word} --seed {args.seed} "
        f"--engines {args.engines}`: {corpus.get('n_clips', '?')} clips from {corpus.get('voices', {})} "
        "voice identities (the engines' recipes are in the corpus's corpus.json). "
        "Splits are speaker-disjoint by the Speech Commands hash rule: "
        f"train {splits['train']}, val {splits['val']}, test {splits['test']} clips "
        "(`_silence_` cut from generated background noise included)."),
        "",
        "## Accuracy (measured)",
        "| data | split | accuracy |",
        "|---|---|---:|",
        f"| synthetic corpus, unseen voices | val | {meta['metrics']['val_accuracy']:.2%} |",
        f"| synthetic corpus, unseen voices | test | {meta['metrics']['test_accuracy']:.2%} |",
    ]
    if real:
        lines.append(f"| real recordings `{args.real.name}` ({real['n']} clips, labels it has) | all | "
                     f"{real['accuracy']:.2%} |")
    lines += [
        "",
        ("Synthetic-voice accuracy says little about real people; the real-recording row is the one to "
        "trust, and it was never used for training or model selection."),
        "",
        "## Recipe",
        f"`python tools/pretrain_base.py --model {args.model} --epochs {args.epochs} --batch-size "
        f"{args.batch_size} --lr {args.lr} --seed {args.seed} --augment {args.augment} --engines {args.engines}`"
        + (f" `--real {args.real}`" if args.real else "")
        + f" ({seconds / 60:.0f} min here, 2 CPU cores). AdamW, warm-up + cosine, label smoothing "
        f"{meta['recipe']['label_smoothing']}, band means removed in the model: {ckpt['arch_config'].get('cmn', False)}.",
        f"Augmentation (`{args.augment}`): {augment_text(meta['recipe']['augment'])}.",
        f"Created {meta['created']} with edgetune {meta['edgetune']}, torch {meta['torch']}.",
    ]
    return "\n".join(lines) + "\n"


def augment_text(a: dict) -> str:
    """The augmentation as the checkpoint recorded it, in words."""
    return (f"speed {a['speed'][0]:g}-{a['speed'][1]:g}, tempo {a['tempo'][0]:g}-{a['tempo'][1]:g}x, "
            f"shift {a['shift_ms']:g} ms, reverb p={a['reverb_prob']:g}, background noise p={a['noise_prob']:g} "
            f"at {a['snr_db'][0]:g}-{a['snr_db'][1]:g} dB SNR, gain {a['gain_db'][0]:g} to {a['gain_db'][1]:g} dB, "
            f"SpecAugment {a['freq_masks']}x{a['freq_mask_bins']} bands, {a['time_masks']}x{a['time_mask_frames']} frames")


if __name__ == "__main__":
    main()
