"""The streaming engine: audio chunks of any size in, detections out.

Two layers, so calibration can replay posteriors without re-running the model:

- `PosteriorStream`: StreamingLogMel frames go into a bounded ring holding the
  last clip's frames (it starts as the features of silence, i.e. the stream is
  zero-padded on the left, as training clips are); every `hop_ms` of frames the
  window is run through the model (batch 1) -> (time_s, softmax).
- `Decider`: mean of the last `average_ms` of posteriors; the top class is
  reported when it is a real event (not `_silence_`/`_unknown_`), its smoothed
  confidence reaches `threshold`, at least `suppress_ms` have passed since the
  previous detection, and (for the same label again) its score fell below the
  threshold or another class led in between.

Input limits (off by default): a window whose loudest 100 ms is under
`min_level_db` is not run through the model and counts as `_silence_`; a
smoothed score under `min_confidence` is "unknown" and never reported.

Inference points are fixed by frame count, never by chunk boundaries, so the
detections do not depend on how the audio was cut into chunks. `time_s` is the
end of the audio the decision has heard (seconds since the stream start/reset).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np

from edgetune.errors import EdgetuneError
from edgetune.frontend import StreamingLogMel
from edgetune.runtime.level import peak_level_db
from edgetune.runtime.model import NON_EVENTS, Head, Recogniser, StreamSettings


@dataclass(frozen=True)
class Detection:
    time_s: float
    label: str
    confidence: float

    def to_dict(self) -> dict:
        return {
            "time_s": round(self.time_s, 3),
            "label": self.label,
            "confidence": round(float(self.confidence), 4),
        }


def check_settings(rec: Recogniser, s: StreamSettings) -> int:
    """Validates settings against the model's front end; returns the hop in frames."""
    frame_ms = rec.frontend.hop_ms
    hop_frames = s.hop_ms / frame_ms
    if s.hop_ms <= 0 or abs(hop_frames - round(hop_frames)) > 1e-6:
        raise EdgetuneError(
            f"hop of {s.hop_ms:g} ms is not a positive multiple of the {frame_ms:g} ms frame hop; use e.g. 100"
        )
    if s.average_ms < 0:
        raise EdgetuneError(f"averaging window {s.average_ms:g} ms is negative")
    if not 0.0 <= s.threshold <= 1.0:
        raise EdgetuneError(f"threshold {s.threshold:g} is not in [0, 1]")
    if s.suppress_ms < 0:
        raise EdgetuneError(f"suppression time {s.suppress_ms:g} ms is negative")
    if s.min_level_db is not None and s.min_level_db > 0:
        raise EdgetuneError(
            f"minimum level {s.min_level_db:g} dBFS is above full scale; use a negative value such as -50"
        )
    if not 0.0 <= s.min_confidence <= 1.0:
        raise EdgetuneError(f"minimum confidence {s.min_confidence:g} is not in [0, 1]")
    return round(hop_frames)


class PosteriorStream:
    """Chunks -> (time_s, posterior) every hop. Keeps only the last clip of frames."""

    def __init__(self, rec: Recogniser, hop_ms: float, min_level_db: float | None = None):
        self.rec = rec
        self.fe = rec.frontend
        self.hop_frames = check_settings(
            rec, StreamSettings(hop_ms=hop_ms, min_level_db=min_level_db)
        )
        self.min_level_db = min_level_db
        self._mel = StreamingLogMel(self.fe)
        self._silence = np.float32(math.log(self.fe.log_floor))
        self.ring = np.empty((self.fe.n_frames, self.fe.n_mels), np.float32)
        # what a window under the minimum level "hears": _silence_ for sure (nothing, without one)
        self._quiet = np.zeros(rec.n_classes, np.float32)
        if "_silence_" in rec.labels:
            self._quiet[rec.labels.index("_silence_")] = 1.0
        self.latencies: list[float] = []  # seconds per inference
        self.compute_s = 0.0  # front end + inference
        self.reset()

    def reset(self) -> None:
        self._mel.reset()
        self.ring.fill(self._silence)
        self._pos = 0  # next ring row to write
        self.frames = 0  # frames since reset
        self.samples = 0  # samples since reset
        self.quiet_windows = 0  # windows under the minimum level, not run through the model
        # the last clip of samples (plus the chunk being pushed), for the level gate only
        self._tail = np.zeros(
            self.fe.clip_samples if self.min_level_db is not None else 0, np.float32
        )

    @property
    def audio_seconds(self) -> float:
        return self.samples / self.fe.sample_rate

    def window(self) -> np.ndarray:
        """The last clip's frames in time order: [n_frames, n_mels]."""
        return np.concatenate([self.ring[self._pos :], self.ring[: self._pos]])

    def _frame_end_s(self, frame_index: int) -> float:
        fe = self.fe
        return (frame_index * fe.hop_length + fe.win_length) / fe.sample_rate

    def _level_db(self, frame_index: int) -> float:
        """Level of the clip of samples that ends where frame `frame_index` ends."""
        fe = self.fe
        end = len(self._tail) - (self.samples - (frame_index * fe.hop_length + fe.win_length))
        return peak_level_db(self._tail[max(0, end - fe.clip_samples) : end], fe.sample_rate)

    def push(self, chunk: np.ndarray) -> list[tuple[float, np.ndarray]]:
        t0 = time.perf_counter()
        chunk = np.asarray(chunk, np.float32).reshape(-1)
        self.samples += len(chunk)
        if self.min_level_db is not None:
            self._tail = np.concatenate([self._tail, chunk])
        frames = self._mel.push(chunk)
        out = []
        n = self.ring.shape[0]
        for f in frames:
            self.ring[self._pos] = f
            self._pos = (self._pos + 1) % n
            self.frames += 1
            if self.frames % self.hop_frames == 0:
                out.append((self._frame_end_s(self.frames - 1), self._posterior()))
        if self.min_level_db is not None:
            self._tail = self._tail[-self.fe.clip_samples :]
        self.compute_s += time.perf_counter() - t0
        return out

    def _posterior(self) -> np.ndarray:
        if self.min_level_db is not None and self._level_db(self.frames - 1) < self.min_level_db:
            self.quiet_windows += 1
            return self._quiet
        t = time.perf_counter()
        logits = self.rec.predict_features(self.window()[None, None])
        self.latencies.append(time.perf_counter() - t)
        return self.rec.head_probabilities(logits)[0]  # one softmax per head of a merged model


class Decider:
    """Posteriors -> detections: smoothing, threshold, suppression, non-events never reported."""

    def __init__(self, labels: list[str], settings: StreamSettings):
        self.labels = list(labels)
        self.settings = settings
        self.window = max(1, round(settings.average_ms / settings.hop_ms))
        self.reportable = np.array([lab not in NON_EVENTS for lab in self.labels])
        # under the user's minimum confidence an answer is "unknown": as if under the threshold
        self.cut = max(settings.threshold, settings.min_confidence)
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(
            (self.window, len(self.labels)), np.float32
        )  # ring of recent posteriors
        self._count = 0
        self._last_label: int | None = None
        self._last_time: float | None = None
        self._rearmed = True

    def smooth(self, posterior: np.ndarray) -> np.ndarray:
        """Add a posterior; the mean of the last `window` of them (fewer at the start)."""
        self._buf[self._count % self.window] = posterior
        self._count += 1
        return self._buf[: min(self._count, self.window)].mean(axis=0)

    def decide(self, time_s: float, top: int, score: float) -> Detection | None:
        """Threshold, suppression and re-arming for the smoothed top class and its score."""
        s = self.settings
        if top != self._last_label or score < self.cut:
            self._rearmed = True
        if not self.reportable[top] or score < self.cut:
            return None
        if (
            self._last_time is not None
            and (time_s - self._last_time) * 1000.0 < s.suppress_ms - 1e-9
        ):
            return None
        if top == self._last_label and not self._rearmed:
            return None
        self._last_label, self._last_time, self._rearmed = top, time_s, False
        return Detection(float(time_s), self.labels[top], score)

    def update(self, time_s: float, posterior: np.ndarray) -> Detection | None:
        smoothed = self.smooth(posterior)
        top = int(np.argmax(smoothed))
        return self.decide(time_s, top, float(smoothed[top]))


class StreamEngine:
    """Feed audio (mono float32 at the model's rate) in chunks of any size; get detections.

    Settings default to the model's `edgetune.stream` metadata; each can be overridden."""

    def __init__(
        self,
        rec: Recogniser,
        hop_ms: float | None = None,
        average_ms: float | None = None,
        threshold: float | None = None,
        suppress_ms: float | None = None,
        min_level_db: float | None = None,
        min_confidence: float | None = None,
    ):
        self.rec = rec
        self.settings = rec.stream.replace(
            hop_ms=hop_ms,
            average_ms=average_ms,
            threshold=threshold,
            suppress_ms=suppress_ms,
            min_level_db=min_level_db,
            min_confidence=min_confidence,
        )
        check_settings(rec, self.settings)
        self.posteriors = PosteriorStream(rec, self.settings.hop_ms, self.settings.min_level_db)
        # one decider per head of a merged model (its detections read "head:label"), else one
        heads = rec.heads or [Head("", rec.labels, "", 0)]
        self.deciders = [(h, Decider(h.labels, self.settings)) for h in heads]
        self.n_detections = 0

    def push(self, chunk: np.ndarray) -> list[Detection]:
        found = []
        for t, p in self.posteriors.push(chunk):
            for head, decider in self.deciders:
                d = decider.update(t, p[head.start : head.end])
                if d is not None:
                    found.append(replace(d, label=f"{head.name}:{d.label}") if head.name else d)
        self.n_detections += len(found)
        return found

    def reset(self) -> None:
        """Forget all audio, frames, posteriors and detections; time restarts at 0."""
        self.posteriors.reset()
        for _, decider in self.deciders:
            decider.reset()
        self.n_detections = 0

    @property
    def audio_seconds(self) -> float:
        return self.posteriors.audio_seconds

    def stats(self) -> dict:
        lat = np.asarray(self.posteriors.latencies) * 1000.0
        audio = self.audio_seconds
        return {
            "audio_seconds": round(audio, 3),
            "inferences": int(lat.size),
            "quiet_windows": self.posteriors.quiet_windows,
            "inference_ms_mean": round(float(lat.mean()), 4) if lat.size else None,
            "inference_ms_p50": round(float(np.percentile(lat, 50)), 4) if lat.size else None,
            "inference_ms_p99": round(float(np.percentile(lat, 99)), 4) if lat.size else None,
            "compute_seconds": round(self.posteriors.compute_s, 4),
            "real_time_factor": round(self.posteriors.compute_s / audio, 5) if audio else None,
        }


def run_stream(engine: StreamEngine, audio: np.ndarray, chunk: int = 1600) -> list[Detection]:
    """All detections of a whole signal, fed in chunks of `chunk` samples."""
    out = []
    for i in range(0, len(audio), chunk):
        out.extend(engine.push(audio[i : i + chunk]))
    return out
