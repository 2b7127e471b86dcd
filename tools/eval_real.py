"""Which built-in corpus makes models that recognise real people? Train the same
model from scratch on corpus variants and score each on a real labelled folder.

    python tools/eval_real.py --quick --workers 1 --threads 1   # one CPU core, ~1 h
    python tools/eval_real.py --device cuda                 # the full ablation on a GPU
    python tools/eval_real.py --mixes "espeak,piper;espeak,piper,flite" --augment on,off \\
        --sizes 100,200 --epochs 30 --workers 1 --threads 1

One factor at a time around a reference run (the first mix, the first
augmentation, the first size, the first model): every mix in --mixes, then the
reference mix with each other augmentation, size and model. Each run builds (or
reuses) its corpus with `build_corpus` and trains with edgetune's own Trainer;
the kept epoch is the best on the corpus's synthetic validation voices. The real
folder (default ../shared/realdata/fsdd_digits) is only ever scored: no clip of
it is trained on or used to choose anything. Writes OUT.json and OUT.md.

Corpora live under --work/corpus/<task>-s<seed>-n<size>-<mix>; a clip whose path
(label, speaker, index) another variant already rendered is hard-linked from it,
not rendered again: same seed, label, index and voice make the same clip. Runs
already in OUT.json with the same settings are kept, so a stopped ablation resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from edgetune.data.synth.corpus import DEFAULT_ENGINES

ROOT = Path(__file__).resolve().parents[1]
REAL_DEFAULT = ROOT.parent / "shared" / "realdata" / "fsdd_digits"
ALL_FIVE = "espeak,piper,flite,kokoro,mbrola"
QUICK_MIXES = "espeak,piper;espeak,piper,flite;espeak,piper,flite,mbrola;espeak,piper,kokoro"
FULL_MIXES = (DEFAULT_ENGINES + ";espeak,piper;espeak,piper,flite;"
              "espeak,piper,flite,mbrola;espeak,piper,kokoro;" + ALL_FIVE + ";espeak;piper;flite;kokoro;mbrola")


def augment_config(name: str):
    """Named training augmentations: `on` (edgetune's default), `off`, `no-<part>`, or a
    finetune preset (`light`, `strong`)."""
    from edgetune.data.augment import AugmentConfig

    on = AugmentConfig()
    parts = {
        "speed": {"speed": (1.0, 1.0)},
        "shift": {"shift_ms": 0.0},
        "reverb": {"reverb_prob": 0.0},
        "noise": {"noise_prob": 0.0},
        "gain": {"gain_db": (0.0, 0.0)},
        "specaug": {"freq_masks": 0, "time_masks": 0},
    }
    if name == "on":
        return on
    if name in ("light", "strong"):
        return AugmentConfig.preset(name)
    if name == "off":
        return dataclasses.replace(on, **{k: v for p in parts.values() for k, v in p.items()})
    if name.startswith("no-") and name[3:] in parts:
        return dataclasses.replace(on, **parts[name[3:]])
    sys.exit(f"error: unknown augmentation {name!r}; use on, off, light, strong or no-{{{','.join(parts)}}}")


def mix_slug(mix: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", mix.lower()).strip("-")


def link_known_clips(target: Path, others: list[Path], relpaths: list[str]) -> int:
    """Hard-link clips other variants already rendered (a path names its whole plan)."""
    linked = 0
    for rel in relpaths:
        dst = target / rel
        if dst.exists():
            continue
        for other in others:
            src = other / rel
            if src.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(src, dst)
                linked += 1
                break
    return linked


def build(work: Path, task: str, size: int, mix: str, seed: int, workers: int) -> tuple[Path, dict]:
    from edgetune.data.synth import corpus as C
    from edgetune.data.synth.effects import WORD_TRIM_DB
    from edgetune.data.synth.engines import available_engines, parse_engine_weights

    # the trim level is in the name: clips rendered under another one are not the same clips
    prefix = f"{task}-s{seed}-t{WORD_TRIM_DB:g}"
    out = work / "corpus" / f"{prefix}-n{size}-{mix_slug(mix)}"
    requested = parse_engine_weights(mix)
    names = available_engines(requested)
    if names:  # link what sibling corpora rendered, then let build_corpus make the rest
        total = sum(requested[n] for n in names)
        voices = C.voice_identities(seed, names, C.voice_counts(size))
        plans = C.plan_corpus(task, size, seed, voices, weights={n: requested[n] / total for n in names})
        siblings = [p for p in (work / "corpus").glob(f"{prefix}-*") if p != out]
        link_known_clips(out, siblings, [p.relpath for p in plans])
    summary = C.build_corpus(out, task, clips_per_word=size, seed=seed, workers=workers, engines=mix,
                             progress=sys.stderr.isatty())
    return out, summary


class RealSet:
    """The real folder, decoded once, with labels lined up to a model's."""

    def __init__(self, path: Path, fe):
        from edgetune.data.dataset import ClipLoader, load_dataset

        ds = load_dataset(path, silence=False)
        self.examples = ds.split("all")
        self.labels = sorted({e.label for e in self.examples})
        self.clips = ClipLoader(fe).clips(self.examples)
        self.path, self.fe = path, fe
        self._features = None

    def features(self):
        import torch

        from edgetune.train.loop import features_of

        if self._features is None:
            self._features = features_of(self.fe, torch.from_numpy(self.clips), torch.device("cpu"))
        return self._features

    def score(self, model, labels: list[str]) -> dict:
        """Open-set accuracy (any of the model's classes may win, as `edgetune verify` counts),
        closed-set accuracy (only the real folder's labels compete), recall per class and speaker."""
        import torch

        from edgetune.train.loop import predict

        missing = [lab for lab in self.labels if lab not in labels]
        if missing:
            sys.exit(f"error: the real folder has labels the corpus lacks: {missing}")
        logits = predict(model, self.features(), torch.device("cpu"))
        truth = np.asarray([labels.index(e.label) for e in self.examples])
        open_pred = logits.argmax(1).numpy()
        cols = [labels.index(lab) for lab in self.labels]
        closed_pred = np.asarray(cols)[logits[:, cols].argmax(1).numpy()]
        per_class = {lab: round(float((open_pred[truth == labels.index(lab)] == labels.index(lab)).mean()), 4)
                     for lab in self.labels}
        speakers = sorted({e.speaker for e in self.examples})
        spk = np.asarray([e.speaker for e in self.examples])
        per_speaker = {s: round(float((open_pred[spk == s] == truth[spk == s]).mean()), 4) for s in speakers}
        return {"accuracy": round(float((open_pred == truth).mean()), 4),
                "closed_accuracy": round(float((closed_pred == truth).mean()), 4),
                "per_class": per_class, "per_speaker": per_speaker, "n": len(truth)}


def train_and_score(corpus: Path, model_name: str, aug: str, args, seed: int, real: RealSet,
                    log: Path) -> dict:
    import torch

    from edgetune.frontend import FrontEnd
    from edgetune.train.finetune import fresh_model, load_tensors, resolve_cmn
    from edgetune.train.loop import TrainConfig, Trainer, accuracy, features_of, predict

    fe = FrontEnd()
    tensors = load_tensors(corpus, fe)
    labels = tensors.dataset.labels
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed, device=args.device,
                      augment=augment_config(aug))
    torch.manual_seed(seed)
    model = fresh_model(model_name, labels, fe, cmn=resolve_cmn(None, corpus, None, fe))  # as finetune would
    t0 = time.time()
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    trainer = Trainer(model, fe, tensors.train, tensors.val, cfg, tensors.noise, log_path=log)
    best = trainer.run()
    seconds = time.time() - t0
    test_feats = features_of(fe, tensors.test.clips, torch.device("cpu"))
    return {
        "synth_val": round(trainer.best_acc, 4),
        "synth_test": round(accuracy(predict(best, test_feats, torch.device("cpu")), tensors.test.targets), 4),
        "best_epoch": 1 + int(np.argmax([r["val_accuracy"] for r in trainer.history])),
        "val_curve": [r["val_accuracy"] for r in trainer.history],
        "train_clips": len(tensors.train.targets),
        "train_seconds": round(seconds, 1),
        "real": real.score(best, labels),
    }


def run_key(run: dict) -> tuple:
    return tuple(run[k] for k in ("mix", "augment", "size", "model", "seed"))


def plan_runs(args) -> list[dict]:
    """One factor at a time around the reference (first of each list)."""
    mixes = [m.strip() for m in args.mixes.split(";") if m.strip()]
    augs = [a.strip() for a in args.augment.split(",") if a.strip()]
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    ref = {"mix": mixes[0], "augment": augs[0], "size": sizes[0], "model": models[0]}
    runs = [{**ref, "mix": m} for m in mixes]
    runs += [{**ref, "augment": a} for a in augs[1:]]
    runs += [{**ref, "size": s} for s in sizes[1:]]
    runs += [{**ref, "model": m} for m in models[1:]]
    return [{**r, "seed": s} for r in runs for s in args.seeds]


def markdown(result: dict) -> str:
    real = result["real"]
    header = ("| engines | augment | clips/word | model | seed | synth val | synth test | real (open) "
              "| real (closed) | worst real class | train s |")
    lines = [f"# Real-voice accuracy by corpus variant ({result['task']})", "",
             (f"Real set: {real['path']} ({real['n']} clips, {real['speakers']} speakers), never trained on "
              "or used for selection; each model is the epoch best on synthetic validation voices."),
             "Open-set: any class may win (as `edgetune verify` counts); closed: only the real labels compete.",
             "", header, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        worst = min(r["real"]["per_class"].items(), key=lambda kv: kv[1])
        lines.append(f"| {r['mix']} | {r['augment']} | {r['size']} | {r['model']} | {r['seed']} "
                     f"| {r['synth_val']:.3f} | {r['synth_test']:.3f} | **{r['real']['accuracy']:.3f}** "
                     f"| {r['real']['closed_accuracy']:.3f} | {worst[0]} {worst[1]:.2f} | {r['train_seconds']:.0f} |")
    lines += ["", "Corpus timings (this machine; clips/s per engine on one worker):", "",
              "| corpus | engine clips | engine clips/s | build s |", "|---|---|---|---|"]
    for name, c in result["corpora"].items():
        rates = ", ".join(f"{e} {v}" for e, v in c["engine_clips_per_s"].items())
        lines.append(f"| {name} | {c['engine_clips']} | {rates} | {c['seconds']} |")
    lines += ["", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="digits")
    ap.add_argument("--real", type=Path, default=REAL_DEFAULT, help="real labelled folder (scored only)")
    ap.add_argument("--mixes", help=f"';'-separated engine mixes, the first the reference [default: {FULL_MIXES}]")
    ap.add_argument("--augment", default=None, help="comma list of on, off, light, strong, no-noise, ... [default: on,off]")
    ap.add_argument("--sizes", default=None, help="clips per word, comma list [default: 300,150]")
    ap.add_argument("--models", default="dscnn-s")
    ap.add_argument("--epochs", type=int, default=None, help="[default: 40; --quick 30]")
    # from scratch on ~100 clips a word, dscnn-s needs >1,500 steps (measured: 435 steps left
    # synthetic validation at 48%, 1,740 at 82%): a smaller batch than finetune's, more epochs
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0],
                    help="training seeds, comma list (the corpus seed stays --corpus-seed)")
    ap.add_argument("--corpus-seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="corpus processes [default: all cores]")
    ap.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's]")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true",
                    help=f"CPU: mixes {QUICK_MIXES}, 100 clips/word, 30 epochs")
    ap.add_argument("--work", type=Path, default=Path("runs") / "eval_real")
    ap.add_argument("--out", type=Path, default=None, help="OUT.json and OUT.md [default: WORK/results]")
    args = ap.parse_args()
    args.mixes = args.mixes or (QUICK_MIXES if args.quick else FULL_MIXES)
    args.augment = args.augment or "on,off"
    args.sizes = args.sizes or ("100" if args.quick else "300,150")
    args.epochs = args.epochs or (30 if args.quick else 40)
    if not args.real.exists():
        sys.exit(f"error: {args.real}: no real labelled folder; give --real DIR (Speech Commands layout or CSV)")
    for a in args.augment.split(","):
        augment_config(a.strip())  # fail before hours of work, not after

    import torch

    from edgetune.frontend import FrontEnd

    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or args.work / "results"
    out.parent.mkdir(parents=True, exist_ok=True)
    real = RealSet(args.real, FrontEnd())
    result = {"task": args.task, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
              "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
              "corpus_seed": args.corpus_seed,
              "real": {"path": str(args.real), "n": len(real.examples),
                       "speakers": len({e.speaker for e in real.examples}), "labels": real.labels},
              "corpora": {}, "runs": []}
    # runs an earlier call finished with the same settings are kept, not trained again
    same = ("task", "epochs", "batch_size", "lr", "corpus_seed")
    done = {}
    if out.with_suffix(".json").exists():
        old = json.loads(out.with_suffix(".json").read_text())
        if all(old.get(k) == result.get(k) for k in same) and old["real"]["path"] == str(args.real):
            done = {run_key(r): r for r in old["runs"]}
            result["corpora"] = old["corpora"]
    for run in plan_runs(args):
        if run_key(run) in done:
            result["runs"].append(done[run_key(run)])
            continue
        corpus, summary = build(args.work, args.task, run["size"], run["mix"], args.corpus_seed, args.workers)
        if corpus.name not in result["corpora"]:
            rendered = summary["engine_rendered"]
            result["corpora"][corpus.name] = {
                "engines": summary["engines"], "engine_weights": summary["engine_weights"],
                "engine_clips": summary["engine_clips"], "rendered": rendered,
                "engine_clips_per_s": {e: round(rendered[e] / t, 2)
                                       for e, t in summary["engine_cpu_seconds"].items() if rendered[e] and t},
                "seconds": summary["seconds"], "word_seconds_median": summary["word_seconds_median"]}
        log = args.work / "logs" / f"{corpus.name}-{run['model']}-{run['augment']}-s{run['seed']}.jsonl"
        scored = train_and_score(corpus, run["model"], run["augment"], args, run["seed"], real, log)
        result["runs"].append({**run, "corpus": corpus.name, **scored})
        print(json.dumps({**run, "synth_val": scored["synth_val"], "real": scored["real"]["accuracy"],
                          "real_closed": scored["real"]["closed_accuracy"]}), flush=True)
        # written after every run, so a long ablation can be read (or stopped) midway
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
