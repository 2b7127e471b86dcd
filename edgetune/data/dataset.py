"""Labelled audio datasets (numpy only, so the device side can read them too).

Two inputs, one result (a `Dataset`: examples with label, speaker and split):
- a folder in the Speech Commands layout, ROOT/<label>/<file>, with optional
  validation_list.txt / testing_list.txt, else the Speech Commands hash rule on
  the speaker (the text before `_nohash_`), so one speaker never spans two splits;
  ROOT/_background_noise_/ holds long noise recordings;
- a CSV manifest `path,label[,split]` (paths relative to the CSV).

`_silence_` examples are cut from the background noise: each noise file is
divided in time (80/10/10) so that train, val and test never share noise.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetune.audio import MAX_LONG_SECONDS, load_audio
from edgetune.errors import DataError
from edgetune.frontend import FrontEnd, fit_clip

SILENCE = "_silence_"
UNKNOWN = "_unknown_"
NOISE_DIR = "_background_noise_"
SPLITS = ("train", "val", "test")
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga"}
# Speech Commands' hash rule (TensorFlow speech_commands/input_data.py: which_set).
_MAX_PER_CLASS = 2**27 - 1
VALIDATION_PERCENT = 10.0
TESTING_PERCENT = 10.0
# Fraction of each noise recording, in time, that each split may cut silence from.
_NOISE_SPAN = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}


@dataclass(frozen=True)
class Example:
    path: str
    label: str
    speaker: str
    split: str
    # For `_silence_` cut from a noise recording: where in the split's share of it
    # (0..1); None for an ordinary clip file.
    noise_position: float | None = None


@dataclass
class Dataset:
    root: Path
    examples: list[Example]
    labels: list[str]
    noise_files: list[str] = field(default_factory=list)
    mapped_to_unknown: list[str] = field(default_factory=list)  # data labels outside `labels`

    def split(self, name: str) -> list[Example]:
        if name == "all":
            return list(self.examples)
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; use train, val, test or all")
        return [e for e in self.examples if e.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {label: n}} in label order."""
        out = {s: {lab: 0 for lab in self.labels} for s in SPLITS}
        for e in self.examples:
            out[e.split][e.label] += 1
        return out

    def fingerprint(self) -> str:
        """Identifies the dataset's content listing (paths, labels, splits), not the audio bytes."""
        h = hashlib.sha256()
        for e in sorted(self.examples, key=lambda e: (e.path, e.noise_position or 0.0)):
            h.update(f"{e.path}|{e.label}|{e.split}|{e.noise_position}\n".encode())
        return h.hexdigest()[:16]


def corpus_info_path(source: str | Path) -> Path:
    """ROOT/corpus.json of a dataset folder or CSV manifest; the built-in corpora write it."""
    source = Path(source)
    return (source.parent if source.is_file() else source) / "corpus.json"


def _corpus_info(source: str | Path) -> dict:
    """ROOT/corpus.json as a dict ({} when there is none)."""
    info = corpus_info_path(source)
    if not info.is_file():
        return {}
    try:
        d = json.loads(info.read_text())
    except ValueError as e:
        raise DataError(f"{info}: unreadable ({e}); rebuild the corpus or delete the file") from None
    if not isinstance(d, dict):
        raise DataError(f"{info}: not a JSON object; rebuild the corpus or delete the file")
    return d


def dataset_frontend(source: str | Path) -> FrontEnd | None:
    """The front end a dataset asks for: `frontend` in ROOT/corpus.json, which the
    built-in corpora write (the instruments corpus asks for the music front end).
    None when the dataset names none."""
    fe = _corpus_info(source).get("frontend")
    try:
        return None if fe is None else FrontEnd.from_dict(fe)
    except (ValueError, TypeError, AttributeError) as e:
        raise DataError(f"{corpus_info_path(source)}: unreadable front end ({e}); "
                        "rebuild the corpus or delete the file") from None


def dataset_cmn(source: str | Path) -> bool | None:
    """Whether a dataset asks models to remove each band's mean (`cmn` in ROOT/corpus.json;
    the vowels corpus says no); None when it does not say."""
    cmn = _corpus_info(source).get("cmn")
    return None if cmn is None else bool(cmn)


def voices_of(source: str | Path) -> str:
    """`synthetic` for a built-in corpus (it writes ROOT/corpus.json), else `recorded`:
    reports say which, since accuracy on synthetic voices says little about real people."""
    return "synthetic" if corpus_info_path(source).is_file() else "recorded"


def speaker_of(filename: str) -> str:
    stem = Path(filename).stem
    return re.sub(r"_nohash_.*$", "", stem)


def which_split(speaker: str) -> str:
    """Speech Commands' rule: stable per speaker, ~10% validation, ~10% test."""
    digest = int(hashlib.sha1(speaker.encode()).hexdigest(), 16)
    percent = (digest % (_MAX_PER_CLASS + 1)) * (100.0 / _MAX_PER_CLASS)
    if percent < VALIDATION_PERCENT:
        return "val"
    if percent < VALIDATION_PERCENT + TESTING_PERCENT:
        return "test"
    return "train"


def load_dataset(
    source: str | Path, labels: list[str] | None = None, silence: bool = True
) -> Dataset:
    """Read a Speech Commands folder or a CSV manifest.

    `labels` fixes the label set and order (a model's); data labels outside it
    become `_unknown_` when the set has one, else DataError. Without `labels`,
    the set is `_silence_` (when there is background noise), `_unknown_` (when
    present), then the other folders sorted."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such dataset folder or CSV; "
                        "build one with `edgetune data synth --out DIR`")
    if source.is_file():
        root, raw = source.parent, _read_manifest(source)
        noise = []
    else:
        root, raw = source, _scan_folder(source)
        noise = sorted(str(p) for p in (source / NOISE_DIR).glob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not raw:
        raise DataError(f"{source}: no audio files found (expected ROOT/<label>/<file>.wav)")
    found = sorted({e.label for e in raw} - {SILENCE, UNKNOWN})
    if labels is None:
        labels = ([SILENCE] if (noise and silence) or any(e.label == SILENCE for e in raw) else [])
        labels += [UNKNOWN] if any(e.label == UNKNOWN for e in raw) else []
        labels += found
    examples = _map_labels(raw, labels, source)
    if silence and SILENCE in labels and noise and not any(e.label == SILENCE for e in examples):
        examples += _silence_examples(examples, noise)
    mapped = sorted({e.label for e in raw} - set(labels))
    return Dataset(root, examples, list(labels), noise, mapped)


def _scan_folder(root: Path) -> list[Example]:
    lists = {name: _read_list(root / f"{name}_list.txt") for name in ("validation", "testing")}
    have_lists = any(lists.values())
    out = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if label_dir.name == NOISE_DIR or label_dir.name.startswith("."):
            continue
        for f in sorted(label_dir.iterdir()):
            if f.suffix.lower() not in AUDIO_SUFFIXES or f.name.startswith("."):
                continue
            rel = f"{label_dir.name}/{f.name}"
            speaker = speaker_of(f.name)
            if have_lists:
                split = "val" if rel in lists["validation"] else "test" if rel in lists["testing"] else "train"
            else:
                split = which_split(speaker)
            out.append(Example(str(f), label_dir.name, speaker, split))
    return out


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def _read_manifest(path: Path) -> list[Example]:
    out = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise DataError(f"{path}: a manifest needs a header with columns path,label[,split]")
        for i, row in enumerate(reader, start=2):
            p = Path(row["path"])
            p = p if p.is_absolute() else path.parent / p
            split = (row.get("split") or "").strip() or which_split(speaker_of(p.name))
            split = {"validation": "val", "testing": "test"}.get(split, split)
            if split not in SPLITS:
                raise DataError(f"{path}:{i}: split {split!r} is not train, val or test")
            out.append(Example(str(p), row["label"].strip(), speaker_of(p.name), split))
    return out


def _map_labels(raw: list[Example], labels: list[str], source: Path) -> list[Example]:
    known = set(labels)
    missing = sorted({e.label for e in raw} - known)
    if missing and UNKNOWN not in known:
        raise DataError(f"{source}: labels {missing} are not among the model's labels {labels}; "
                        "remove those folders or train a model that has `_unknown_`")
    return [e if e.label in known else Example(e.path, UNKNOWN, e.speaker, e.split) for e in raw]


def _silence_examples(examples: list[Example], noise: list[str]) -> list[Example]:
    """About as many `_silence_` clips per split as the average class has."""
    out = []
    labels = {e.label for e in examples}
    for split in SPLITS:
        n = round(sum(e.split == split for e in examples) / max(len(labels), 1))
        for i in range(n):
            k = i % len(noise)
            # Golden-ratio steps spread the cuts evenly over the split's share of the file.
            position = (i * 0.618034) % 1.0
            out.append(Example(noise[k], SILENCE, f"noise{k}", split, noise_position=position))
    return out


class ClipLoader:
    """Decodes examples into fixed-length clips; caches the long noise recordings."""

    def __init__(self, fe: FrontEnd):
        self.fe = fe
        self._noise: dict[str, np.ndarray] = {}

    def noise(self, path: str) -> np.ndarray:
        if path not in self._noise:
            self._noise[path] = load_audio(path, self.fe.sample_rate, max_seconds=MAX_LONG_SECONDS)
        return self._noise[path]

    def clip(self, e: Example) -> np.ndarray:
        if e.noise_position is not None:
            return self._silence(e)
        return fit_clip(self.fe, load_audio(e.path, self.fe.sample_rate))

    def _silence(self, e: Example) -> np.ndarray:
        audio = self.noise(e.path)
        lo, hi = (int(f * len(audio)) for f in _NOISE_SPAN[e.split])
        start = lo + int(max(hi - lo - self.fe.clip_samples, 0) * e.noise_position)
        segment = fit_clip(self.fe, audio[start : start + self.fe.clip_samples])
        # Quiet rooms as well as loud ones: a level per clip (0 to -39 dB), fixed by its position.
        gain = 10 ** (-(zlib.crc32(f"{e.path}{e.noise_position}".encode()) % 40) / 20)
        return (segment * gain).astype(np.float32)

    def clips(self, examples: list[Example], progress: bool = False) -> np.ndarray:
        it = examples
        if progress:
            from tqdm import tqdm

            it = tqdm(examples, desc="loading audio", unit="clip", leave=False)
        out = np.zeros((len(examples), self.fe.clip_samples), np.float32)
        for i, e in enumerate(it):
            out[i] = self.clip(e)
        return out
