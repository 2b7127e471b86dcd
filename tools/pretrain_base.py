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
    ap.add_argument("--real", type=Path, help="A real labelled folder to score on (never trained on).")
    ap.add_argument("--out", type=Path, default=REPO_MODELS)
    ap.add_argument("--work", type=Path, default=Path("runs") / "pretrain")
    args = ap.parse_args()

    from edgetune.data.synth.corpus import build_corpus
    from edgetune.evaluate import evaluate
    from edgetune.train.finetune import finetune
    from edgetune.train.loop import TrainConfig

    t0 = time.time()
    corpus = build_corpus(args.corpus, "all", clips_per_word=args.clips_per_word, seed=args.seed,
                          progress=sys.stderr.isatty())
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      device=args.device)
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
        (f"`edgetune data synth --task all --clips-per-word {args.clips_per_word} --seed {args.seed}`: "
        f"{corpus.get('clips', '?')} clips from {corpus.get('voices', {})} voice identities "
        "(eSpeak NG voices and variants, and the Piper `en_US-joe-medium` voice with formant-shifted "
        "pseudo-speakers). Splits are speaker-disjoint by the Speech Commands hash rule: "
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
        f"{args.batch_size} --lr {args.lr} --seed {args.seed}`"
        + (f" `--real {args.real}`" if args.real else "")
        + f" ({seconds / 60:.0f} min here, 2 CPU cores). AdamW, warm-up + cosine, label smoothing 0.1, "
        "augmentation: speed 0.9-1.1, shift, reverb, background noise 5-20 dB SNR, gain, SpecAugment.",
        f"Created {meta['created']} with edgetune {meta['edgetune']}, torch {meta['torch']}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
