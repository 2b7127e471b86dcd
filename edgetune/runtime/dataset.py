"""Labelled clips on the device side (numpy-free, torch-free): the split rule lives here.

Two inputs (DESIGN.md, "Datasets"):
- a Speech Commands folder `ROOT/<label>/<file>.wav`; `_background_noise_/` is
  not a class. Split: `validation_list.txt` / `testing_list.txt` when either is
  present (paths relative to ROOT, one per line; everything else is train),
  else the Speech Commands hash rule on the speaker (`which_split`).
- a CSV manifest `path,label[,split]` (header optional; paths relative to the
  manifest; a missing split is decided by the hash rule).

`which_split(speaker)` is the one definition of the hash rule: the host-side
loader imports it so that both sides put every speaker in the same split.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from edgetune.errors import DataError

SPLITS = ("train", "val", "test")
SPLIT_CHOICES = ("train", "val", "test", "all")
BACKGROUND_DIR = "_background_noise_"
UNKNOWN = "_unknown_"
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
# TensorFlow speech_commands input_data.py: MAX_NUM_WAVS_PER_CLASS = 2**27 - 1 (~134M)
MAX_NUM_WAVS_PER_CLASS = 2**27 - 1
VALIDATION_PERCENTAGE = 10.0
TESTING_PERCENTAGE = 10.0
_SPLIT_ALIASES = {"validation": "val", "valid": "val", "testing": "test", "training": "train"}


def speaker_of(filename: str | os.PathLike) -> str:
    """Speaker id of a clip: the file name before `_nohash_`, else the file stem.

    (TensorFlow hashes the whole base name when there is no `_nohash_`; every
    Speech Commands file has one, so the two agree on that dataset.)"""
    name = Path(filename).name
    if "_nohash_" in name:
        return name.split("_nohash_", 1)[0]
    return Path(name).stem


def which_split(
    speaker: str,
    validation_percentage: float = VALIDATION_PERCENTAGE,
    testing_percentage: float = TESTING_PERCENTAGE,
) -> str:
    """'train' | 'val' | 'test' for a speaker id: TensorFlow's `which_set` rule.

    percentage = (int(sha1(speaker).hexdigest(), 16) % (MAX_NUM_WAVS_PER_CLASS + 1))
                 * (100 / MAX_NUM_WAVS_PER_CLASS);
    < 10 -> val, < 20 -> test, else train. Pure: same speaker, same split, anywhere."""
    digest = hashlib.sha1(speaker.encode("utf-8")).hexdigest()
    percentage = (int(digest, 16) % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)
    if percentage < validation_percentage:
        return "val"
    if percentage < validation_percentage + testing_percentage:
        return "test"
    return "train"


def normalise_split(split: str) -> str:
    s = _SPLIT_ALIASES.get(split.strip().lower(), split.strip().lower())
    if s not in SPLIT_CHOICES:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLIT_CHOICES)}")
    return s


@dataclass(frozen=True)
class Item:
    path: str
    label: str  # as in the data (folder or manifest)
    split: str  # train | val | test


def _read_list(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {ln.strip().replace("\\", "/") for ln in path.read_text().splitlines() if ln.strip()}


def scan_folder(root: str | os.PathLike) -> list[Item]:
    """Every clip of a Speech Commands folder with its split (all splits)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder; give a folder of <label>/<clip>.wav or a CSV manifest")
    val_list = _read_list(root / "validation_list.txt")
    test_list = _read_list(root / "testing_list.txt")
    use_lists = (root / "validation_list.txt").exists() or (root / "testing_list.txt").exists()
    items = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if label_dir.name == BACKGROUND_DIR or label_dir.name.startswith("."):
            continue
        for f in sorted(label_dir.iterdir()):
            if not f.is_file() or f.suffix.lower() not in AUDIO_EXTENSIONS or f.name.startswith("."):
                continue
            rel = f"{label_dir.name}/{f.name}"
            if use_lists:
                split = "val" if rel in val_list else "test" if rel in test_list else "train"
            else:
                split = which_split(speaker_of(f.name))
            items.append(Item(str(f), label_dir.name, split))
    if not items:
        raise DataError(f"{root}: no audio clips in <label>/ sub-folders (wav, flac, ogg)")
    return items


def read_manifest(path: str | os.PathLike) -> list[Item]:
    """Rows `path,label[,split]` of a CSV manifest; a header row is optional."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such manifest")
    base = path.parent
    items = []
    with path.open(newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            row = [c.strip() for c in row]
            if not row or not any(row) or row[0].startswith("#"):
                continue
            if lineno == 1 and row[0].lower() == "path":
                continue
            if len(row) < 2 or not row[0] or not row[1]:
                raise DataError(f"{path}:{lineno}: expected `path,label[,split]`, got {','.join(row)!r}")
            clip = Path(row[0])
            clip = clip if clip.is_absolute() else base / clip
            if len(row) >= 3 and row[2]:
                try:
                    split = normalise_split(row[2])
                except DataError:
                    raise DataError(f"{path}:{lineno}: split {row[2]!r} is not train, val or test") from None
                if split == "all":
                    raise DataError(f"{path}:{lineno}: split `all` is not a split; use train, val or test")
            else:
                split = which_split(speaker_of(clip.name))
            items.append(Item(str(clip), row[1], split))
    if not items:
        raise DataError(f"{path}: manifest has no rows")
    return items


def read_items(data: str | os.PathLike) -> list[Item]:
    """A folder or a .csv manifest, all splits."""
    p = Path(data)
    if p.suffix.lower() == ".csv":
        return read_manifest(p)
    return scan_folder(p)


def select(items: list[Item], split: str) -> list[Item]:
    split = normalise_split(split)
    return list(items) if split == "all" else [it for it in items if it.split == split]


def map_to_model(items: list[Item], model_labels: list[str], source: str = "data") -> tuple[list[tuple[str, int]], list[str]]:
    """(path, model class index) pairs, and the data labels that were mapped to `_unknown_`.

    Model labels missing from the data are fine; a data label the model lacks becomes
    `_unknown_` when the model has that class, else DataError naming the labels."""
    index = {lab: i for i, lab in enumerate(model_labels)}
    foreign = sorted({it.label for it in items if it.label not in index})
    if foreign and UNKNOWN not in index:
        raise DataError(
            f"{source}: labels {', '.join(foreign)} are not classes of the model "
            f"({', '.join(model_labels)}), and the model has no `{UNKNOWN}` class; "
            "remove those folders or score with a model trained on them"
        )
    pairs = [(it.path, index.get(it.label, index.get(UNKNOWN, -1))) for it in items]
    return pairs, foreign


def labelled_clips(data: str | os.PathLike, split: str, model_labels: list[str]) -> tuple[list[tuple[str, int]], list[str]]:
    """The clips of one split (or `all`) as (path, model class index); plus the labels mapped to unknown."""
    split = normalise_split(split)
    items = select(read_items(data), split)
    if not items:
        raise DataError(f"{data}: no clips in the {split} split; try --split all")
    return map_to_model(items, model_labels, source=str(data))


def background_files(root: str | os.PathLike) -> list[str]:
    d = Path(root) / BACKGROUND_DIR
    if not d.is_dir():
        return []
    return [str(f) for f in sorted(d.iterdir()) if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS]
