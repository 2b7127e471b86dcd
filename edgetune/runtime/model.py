"""Load an exported edgetune ONNX file: metadata + an onnxruntime session.

The file describes itself (DESIGN.md, "ONNX contract"): labels, front end,
precision, streaming defaults, goal, metrics and lineage live in
`metadata_props` as JSON strings. A file without `edgetune.format` is refused
with a message that says how to export one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from edgetune.errors import DeviceError, ModelError
from edgetune.frontend import FrontEnd, clip_features

FORMAT = "edgetune.onnx/1"
INPUT_NAME = "features"
OUTPUT_NAME = "logits"
# Labels that name "nothing to report": never announced by the stream engine.
NON_EVENTS = ("_silence_", "_unknown_")
EXPORT_HINT = "export one with `edgetune export CHECKPOINT --onnx`"


@dataclass(frozen=True)
class StreamSettings:
    """How the streaming engine turns per-hop posteriors into detections."""

    hop_ms: float = 100.0  # inference every hop
    average_ms: float = 500.0  # posterior smoothing window (mean of softmax)
    threshold: float = 0.7  # smoothed confidence needed to report
    suppress_ms: float = 1500.0  # refractory time after a detection
    # Input limits the user sets (off by default): windows whose loudest 100 ms is under
    # `min_level_db` dBFS are silence, not classified; answers less sure than
    # `min_confidence` are "unknown" rather than a guess.
    min_level_db: float | None = None
    min_confidence: float = 0.0

    @classmethod
    def from_dict(cls, d: dict | None) -> StreamSettings:
        d = dict(d or {})
        known = {k: float(d[k]) for k in _SETTING_KEYS if d.get(k) is not None}
        return cls(**known)

    def replace(self, **overrides) -> StreamSettings:
        """A copy with the non-None overrides applied."""
        d = asdict(self)
        d.update({k: float(v) for k, v in overrides.items() if v is not None})
        return StreamSettings(**d)

    def to_dict(self) -> dict:
        return asdict(self)


# what calibration tunes and a model file stores; the input limits are the user's to set
TUNED_KEYS = ("hop_ms", "average_ms", "threshold", "suppress_ms")
_SETTING_KEYS = (*TUNED_KEYS, "min_level_db", "min_confidence")


def _require_onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError:
        raise DeviceError(
            "onnxruntime is not installed; install it with `pip install onnxruntime` "
            "(on 32-bit ARM boards use a wheel built for the board)"
        ) from None
    return ort


@dataclass(frozen=True)
class Head:
    """One task of a merged model: its output tensor and its columns of the logits."""

    name: str
    labels: list[str]
    output: str
    start: int

    @property
    def end(self) -> int:
        return self.start + len(self.labels)


@dataclass
class Recogniser:
    """One loaded model. Call `predict_features` / `predict_clips`; read the rest.

    A merged model (several heads on one trunk) runs every head in one session call;
    its logits are the heads' side by side (`labels` likewise), and `head(name)` is a
    view that answers for one head only."""

    path: str
    labels: list[str]
    frontend: FrontEnd
    precision: str
    stream: StreamSettings
    goal: dict
    metrics: dict
    lineage: list | dict | None
    metadata: dict  # every metadata_props entry, JSON-decoded where possible
    threads: int | None
    file_bytes: int
    session: object = field(repr=False)
    input_name: str = INPUT_NAME
    output_names: tuple[str, ...] = (OUTPUT_NAME,)
    heads: tuple[Head, ...] = ()
    columns: tuple[int, int] | None = None  # a head view: its slice of the logits

    def head(self, name: str) -> Recogniser:
        """The recogniser of one head of a merged model."""
        found = [h for h in self.heads if h.name == name]
        if not found:
            have = ", ".join(h.name for h in self.heads) or "none: it has a single output"
            raise ModelError(f"{self.path}: no head {name!r} (heads: {have})")
        h = found[0]
        return replace(self, labels=list(h.labels), heads=(), columns=(h.start, h.end),
                       stream=StreamSettings.from_dict({**self.stream.to_dict(), **_head_stream(self, h)}))

    def head_probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Softmax within each head (one distribution per head, side by side)."""
        if not self.heads:
            return softmax(logits)
        return np.concatenate([softmax(logits[:, h.start : h.end]) for h in self.heads], axis=1)

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    @property
    def n_frames(self) -> int:
        return self.frontend.n_frames

    @property
    def min_accuracy(self) -> float | None:
        v = (self.goal or {}).get("min_accuracy")
        return None if v is None else float(v)

    def predict_features(self, batch: np.ndarray) -> np.ndarray:
        """Logits [B, n_classes] for features [B, 1, frames, n_mels] (or [B, frames, n_mels])."""
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim == 3:
            x = x[:, None]
        expected = (1, self.frontend.n_frames, self.frontend.n_mels)
        if x.ndim != 4 or x.shape[1:] != expected:
            raise ModelError(
                f"{self.path}: features of shape {tuple(x.shape)} given, the model takes "
                f"[batch, {', '.join(map(str, expected))}]"
            )
        if x.shape[0] == 0:
            return np.zeros((0, self.n_classes), np.float32)
        outs = self.session.run(list(self.output_names), {self.input_name: np.ascontiguousarray(x)})
        logits = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=1)
        return logits if self.columns is None else logits[:, self.columns[0] : self.columns[1]]

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        return self.head_probabilities(self.predict_features(batch))

    def predict_clips(self, clips: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Logits [N, n_classes] for mono float32 clips at the front end's rate
        (each centre-cropped or zero-padded to one clip, as in training)."""
        out = []
        for i in range(0, len(clips), batch_size):
            feats = np.stack([clip_features(self.frontend, c) for c in clips[i : i + batch_size]])
            out.append(self.predict_features(feats))
        if not out:
            return np.zeros((0, self.n_classes), np.float32)
        return np.concatenate(out)

    def summary(self) -> dict:
        return {
            "model": self.path,
            "labels": self.labels,
            "precision": self.precision,
            "file_bytes": self.file_bytes,
            "frontend": self.frontend.to_dict(),
            "stream": self.stream.to_dict(),
            "goal": self.goal,
            "metrics": self.metrics,
        }


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def _decode(value: str):
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def load_model(path: str | os.PathLike, threads: int | None = None) -> Recogniser:
    """Open an edgetune ONNX file; ModelError if it is not one, DeviceError without onnxruntime.

    threads: onnxruntime intra-op threads (None: onnxruntime's default, all cores)."""
    ort = _require_onnxruntime()
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such model file; {EXPORT_HINT}")
    if path.is_dir():
        raise ModelError(f"{path}: is a folder, not an .onnx file; {EXPORT_HINT}")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads is not None:
        if threads < 1:
            raise ModelError(f"threads must be >= 1, got {threads}")
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # noqa: BLE001 - any failure here is the user's file or hardware
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(
            f"{path}: not a readable ONNX model ({first[:200]}); {EXPORT_HINT}"
        ) from None

    raw = dict(session.get_modelmeta().custom_metadata_map or {})
    meta = {k: _decode(v) for k, v in raw.items()}
    fmt = meta.get("edgetune.format")
    if fmt is None:
        raise ModelError(
            f"{path}: not an edgetune model (no `edgetune.format` in its metadata, so its labels "
            f"and front end are unknown); {EXPORT_HINT}"
        )
    if fmt != FORMAT:
        raise ModelError(
            f"{path}: format {fmt!r}, this edgetune reads {FORMAT!r}; re-export it or upgrade edgetune"
        )

    labels = meta.get("edgetune.labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ModelError(
            f"{path}: `edgetune.labels` is missing or not a list of names; re-export it"
        )
    fe_dict = meta.get("edgetune.frontend")
    if not isinstance(fe_dict, dict):
        raise ModelError(f"{path}: `edgetune.frontend` is missing; re-export it")
    try:
        frontend = FrontEnd.from_dict(fe_dict)
    except (TypeError, ValueError) as e:
        raise ModelError(f"{path}: bad `edgetune.frontend` ({e}); re-export it") from None
    precision = meta.get("edgetune.precision", "fp32")
    if precision not in ("fp32", "int8"):
        raise ModelError(f"{path}: `edgetune.precision` is {precision!r}, expected fp32 or int8")

    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    heads = _heads(path, meta, labels)
    output_names = tuple(h.output for h in heads) or (OUTPUT_NAME,)
    if INPUT_NAME not in inputs or not set(output_names) <= set(outputs):
        raise ModelError(
            f"{path}: graph has inputs {sorted(inputs)} and outputs {sorted(outputs)}, "
            f"expected `{INPUT_NAME}` and {', '.join(f'`{o}`' for o in output_names)}; {EXPORT_HINT}"
        )
    shape = list(inputs[INPUT_NAME].shape)
    want = [None, 1, frontend.n_frames, frontend.n_mels]
    if len(shape) != 4 or any(
        isinstance(s, int) and w is not None and s != w for s, w in zip(shape, want)
    ):
        raise ModelError(
            f"{path}: input `features` has shape {shape}, but its front end makes "
            f"[batch, 1, {frontend.n_frames}, {frontend.n_mels}]; re-export it"
        )
    widths = [outputs[o].shape[1] if len(outputs[o].shape) == 2 else None for o in output_names]
    if all(isinstance(w, int) for w in widths) and sum(widths) != len(labels):
        raise ModelError(f"{path}: {sum(widths)} outputs but {len(labels)} labels; re-export it")

    try:
        stream = StreamSettings.from_dict(meta.get("edgetune.stream"))
    except (TypeError, ValueError) as e:
        raise ModelError(f"{path}: bad `edgetune.stream` ({e}); re-export it") from None
    return Recogniser(
        path=str(path),
        labels=list(labels),
        frontend=frontend,
        precision=precision,
        stream=stream,
        goal=meta.get("edgetune.goal") or {},
        metrics=meta.get("edgetune.metrics") or {},
        lineage=meta.get("edgetune.lineage"),
        metadata=meta,
        threads=threads,
        file_bytes=path.stat().st_size,
        session=session,
        output_names=output_names,
        heads=heads,
    )


def one_head(rec: Recogniser, head: str | None) -> Recogniser:
    """The recogniser a one-task command (verify, stream-eval) scores: the model itself,
    or the named head of a merged model."""
    if head:
        return rec.head(head)
    if rec.heads:
        names = ", ".join(h.name for h in rec.heads)
        raise ModelError(f"{rec.path}: a merged model with heads {names}; choose one with --head NAME")
    return rec


def _heads(path: Path, meta: dict, labels: list[str]) -> tuple[Head, ...]:
    """A merged model's heads from `edgetune.heads`; () for a single-output model."""
    entries = meta.get("edgetune.heads")
    if entries is None:
        return ()
    heads, start = [], 0
    try:
        for e in entries:
            heads.append(Head(str(e["name"]), [str(x) for x in e["labels"]], str(e["output"]), start))
            start += len(e["labels"])
    except (TypeError, KeyError) as e:
        raise ModelError(f"{path}: bad `edgetune.heads` ({e}); re-export it") from None
    if [lab for h in heads for lab in h.labels] != labels:
        raise ModelError(f"{path}: `edgetune.heads` disagrees with `edgetune.labels`; re-export it")
    return tuple(heads)


def _head_stream(rec: Recogniser, head: Head) -> dict:
    """A head's own stream settings, where the export recorded some."""
    for e in rec.metadata.get("edgetune.heads") or []:
        if e.get("name") == head.name and isinstance(e.get("stream"), dict):
            return e["stream"]
    return {}


def save_stream_settings(path: str | os.PathLike, settings: StreamSettings, head: str | None = None,
                         calibrated: dict | None = None) -> None:
    """Write stream settings into the model file's metadata (`edgetune.stream`, or the head's
    entry of `edgetune.heads`), so `listen` and `stream-eval` use them by default; `calibrated`
    records where they came from. The file is rewritten atomically, the rest of it unchanged."""
    from edgetune.runtime.onnxmeta import read_metadata, set_metadata

    chosen = {k: getattr(settings, k) for k in TUNED_KEYS}
    if calibrated:
        chosen["calibrated"] = calibrated
    key = "edgetune.heads" if head else "edgetune.stream"
    meta = read_metadata(path)
    if key not in meta:
        raise ModelError(f"{path}: no `{key}` metadata to update; {EXPORT_HINT}")
    value = json.loads(meta[key])
    if head:
        entry = next((e for e in value if e.get("name") == head), None)
        if entry is None:
            raise ModelError(f"{path}: no head named {head!r}")
        entry["stream"] = {**(entry.get("stream") or {}), **chosen}
    else:
        value = {**value, **chosen}
    set_metadata(path, key, json.dumps(value))
