"""Hard-negative mining: the windows of a *training* stream where a model hears a word
in something else, written as `_unknown_` clips for another round of fine-tuning.

A stream's false accepts are whole other words heard with the word at the window's
edge, a position the corpus's centred clips rarely show. This runs the device-side
streaming engine over a stream built from the corpus's train split, and for every
other word (truth label `_unknown_`) keeps the windows, one per hop, from its onset
until `--tolerance-ms` after its end, in which the model's top reportable class reaches
`--min-score`: at most `--per-word` of them, the highest scoring. Each is written as
exactly the clip the model heard (the audio of its window) under OUT/_unknown_/, with a
speaker name that the split rule puts in train, so no mined clip is validated or tested.

    edgetune data stream corpus/digits-c900u --split train --minutes 120 --seed 5 \\
        --unknown-share 0.5 --out runs/streams/digits-train120.wav
    python tools/mine_negatives.py runs/b3/finetuned-fp32.onnx \\
        --stream runs/streams/digits-train120.wav --truth runs/streams/digits-train120.csv \\
        --out corpus/digits-mined
Writes OUT/mined.json (what was kept, per word and per class heard).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from edgetune.audio import MAX_LONG_SECONDS, load_audio, write_audio
from edgetune.data.dataset import UNKNOWN, which_split
from edgetune.files import write_json_atomic
from edgetune.runtime.model import NON_EVENTS, load_model
from edgetune.runtime.streameval import read_truth, stream_posteriors


def train_speaker(stem: str) -> str:
    """A speaker name starting with `stem` that the Speech Commands hash rule puts in train."""
    k = 0
    while which_split(f"{stem}{k}") != "train":
        k += 1
    return f"{stem}{k}"


def mine(model: str, stream: str, truth: str, out: Path, min_score: float, per_word: int,
         tolerance_ms: float, hop_ms: float) -> dict:
    rec = load_model(model)
    fe = rec.frontend
    audio = load_audio(stream, fe.sample_rate, max_seconds=MAX_LONG_SECONDS)
    post = stream_posteriors(rec, audio, hop_ms)  # (time, posterior) per hop
    times, probs = np.array([t for t, _ in post]), np.stack([p for _, p in post])
    reportable = np.array([lab not in NON_EVENTS for lab in rec.labels])
    top = np.where(reportable, probs, -1.0).argmax(axis=1)
    score = probs[np.arange(len(probs)), top]
    speaker = train_speaker(f"mined-{Path(stream).stem}-")
    folder = out / UNKNOWN
    kept, heard, words_kept = 0, Counter(), 0
    others = [w for w in read_truth(truth) if w.label == UNKNOWN]
    for i, word in enumerate(others):
        inside = np.nonzero((times >= word.onset_s) & (times <= word.offset_s + tolerance_ms / 1000)
                            & (score >= min_score))[0]
        words_kept += bool(len(inside))
        for j in inside[np.argsort(-score[inside])][:per_word]:
            end = round(times[j] * fe.sample_rate)
            clip = audio[max(0, end - fe.clip_samples) : end]
            write_audio(folder / f"{speaker}_nohash_{i}-{j}.wav", clip, fe.sample_rate)
            heard[rec.labels[top[j]]] += 1
            kept += 1
    summary = {"model": model, "stream": stream, "other_words": len(others),
               "words_with_windows_kept": words_kept,
               "windows_kept": kept, "heard_as": dict(heard.most_common()), "speaker": speaker,
               "min_score": min_score, "per_word": per_word, "tolerance_ms": tolerance_ms}
    write_json_atomic(out / "mined.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--stream", required=True, help="a stream of the corpus's train split (wav)")
    ap.add_argument("--truth", required=True, help="its truth CSV")
    ap.add_argument("--out", required=True, type=Path, help="corpus folder: clips go to OUT/_unknown_/")
    ap.add_argument("--min-score", type=float, default=0.3, help="top word's posterior to keep a window")
    ap.add_argument("--per-word", type=int, default=3, help="most windows kept per other word")
    ap.add_argument("--tolerance-ms", type=float, default=750.0, help="windows this long after a word ends")
    ap.add_argument("--hop-ms", type=float, default=100.0)
    args = ap.parse_args(argv)
    summary = mine(args.model, args.stream, args.truth, args.out, args.min_score, args.per_word,
                   args.tolerance_ms, args.hop_ms)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
