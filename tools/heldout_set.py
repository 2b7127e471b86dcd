"""A large held-out test set from a second built-in corpus: every clip of NEW whose
speaker never appears in the training or validation split of the corpora a model
learnt from. A corpus's own test split holds ~10% of its voices (164 clips for the
vowels), too few to tell a 1-point difference from chance; a corpus built with
another seed draws new voices (new pitch, rate, warp per engine voice), so nearly all
of it is as unseen as that test split:

    edgetune data synth --task digits --seed 1 --workers 1 --out corpus/digits-s1
    python tools/heldout_set.py corpus/digits-s1 --exclude corpus/digits
    edgetune verify runs/m_digits/qat-int8.onnx --data corpus/digits-s1/heldout.csv --split test --min-accuracy 0

It writes NEW/heldout.csv (path, label, split=test), words and `_unknown_` clips;
`_silence_` comes from a folder's background noise, which a manifest does not carry.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from edgetune.data.dataset import load_dataset
from edgetune.files import write_text_atomic


def seen_speakers(corpus: Path) -> set[str]:
    """Speakers a model trained on, or selected its checkpoint on, in `corpus`."""
    ds = load_dataset(corpus, silence=False)
    return {e.speaker for e in ds.examples if e.split in ("train", "val")}


def write_heldout(new: Path, exclude: list[Path]) -> dict:
    """Write NEW/heldout.csv; the clips and voices kept, and the clips left out."""
    seen = set().union(*(seen_speakers(c) for c in exclude))
    ds = load_dataset(new, silence=False)
    kept = [e for e in ds.examples if e.speaker not in seen]
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["path", "label", "split"])
    for e in kept:
        writer.writerow([Path(e.path).relative_to(new).as_posix(), e.label, "test"])
    write_text_atomic(new / "heldout.csv", rows.getvalue())
    return {"clips": len(kept), "voices": len({e.speaker for e in kept}), "left_out": len(ds.examples) - len(kept)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("new", type=Path, help="a built-in corpus made with another --seed")
    ap.add_argument("--exclude", type=Path, action="append", required=True,
                    help="a corpus the models learnt from (repeatable)")
    args = ap.parse_args()
    n = write_heldout(args.new, args.exclude)
    print(f"wrote {args.new / 'heldout.csv'}: {n['clips']} clips of {n['voices']} unseen voices "
          f"({n['left_out']} clips of voices the excluded corpora train or validate on left out)")


if __name__ == "__main__":
    main()
