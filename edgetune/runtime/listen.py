"""Audio from a file, stdin or a microphone through the streaming engine.

Every source ends in a `ListenSummary` (also on Ctrl-C): audio seconds,
detections, dropped/overflowed blocks, inference latency, real-time factor.
The microphone goes through sounddevice, imported only in `listen_microphone`
and `list_input_devices`, so the rest works on a board without PortAudio.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import BinaryIO

import numpy as np
import soxr

from edgetune.audio import MAX_LONG_SECONDS, load_audio
from edgetune.errors import DeviceError
from edgetune.runtime.stream import Detection, StreamEngine

OnDetection = Callable[[Detection], None]


@dataclass
class ListenSummary:
    source: str
    audio_seconds: float = 0.0
    detections: int = 0
    dropped_blocks: int = 0  # blocks lost because processing fell behind
    overflows: int = 0  # blocks the audio driver reported as overflowed
    inferences: int = 0
    quiet_windows: int = 0  # windows under --min-level: silence, not run through the model
    inference_ms_mean: float | None = None
    inference_ms_p99: float | None = None
    real_time_factor: float | None = None  # compute time / audio time
    wall_seconds: float = 0.0
    interrupted: bool = False
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        lat = (
            f"inference {self.inference_ms_mean:.3f} ms mean, {self.inference_ms_p99:.3f} ms p99"
            if self.inferences
            else "no inference"
        )
        rtf = (
            f"real-time factor {self.real_time_factor:.4f}"
            if self.real_time_factor is not None
            else ""
        )
        stop = " (stopped by Ctrl-C)" if self.interrupted else ""
        quiet = (
            f", {self.quiet_windows} windows under the minimum level" if self.quiet_windows else ""
        )
        return (
            f"{self.source}: {self.audio_seconds:.1f} s of audio, {self.detections} detections, "
            f"{self.dropped_blocks} dropped and {self.overflows} overflowed blocks{quiet}; {lat}; {rtf}{stop}"
        )


def _finish(engine: StreamEngine, summary: ListenSummary, wall0: float) -> ListenSummary:
    st = engine.stats()
    summary.audio_seconds = st["audio_seconds"]
    summary.detections = engine.n_detections
    summary.inferences = st["inferences"]
    summary.quiet_windows = st["quiet_windows"]
    summary.inference_ms_mean = st["inference_ms_mean"]
    summary.inference_ms_p99 = st["inference_ms_p99"]
    summary.real_time_factor = st["real_time_factor"]
    summary.wall_seconds = round(time.perf_counter() - wall0, 3)
    summary.settings = engine.settings.to_dict()
    return summary


def _emit(engine: StreamEngine, chunk: np.ndarray, on_detection: OnDetection | None) -> None:
    for d in engine.push(chunk):
        if on_detection is not None:
            on_detection(d)


def listen_file(
    engine: StreamEngine,
    path: str | os.PathLike,
    fast: bool = False,
    on_detection: OnDetection | None = None,
    seconds: float | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> ListenSummary:
    """Play a file (its first `seconds`) through the engine in hop-sized chunks;
    in real time unless `fast`. `on_ready(path)` is called as playback starts."""
    fe = engine.rec.frontend
    audio = load_audio(path, fe.sample_rate, max_seconds=MAX_LONG_SECONDS)
    if seconds is not None:
        audio = audio[: round(seconds * fe.sample_rate)]
    hop = round(fe.sample_rate * engine.settings.hop_ms / 1000)
    summary = ListenSummary(source=str(path))
    wall0 = time.perf_counter()
    try:
        if on_ready is not None:
            on_ready(str(path))
        for i in range(0, len(audio), hop):
            if not fast:
                delay = wall0 + i / fe.sample_rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            _emit(engine, audio[i : i + hop], on_detection)
    except KeyboardInterrupt:
        summary.interrupted = True
    return _finish(engine, summary, wall0)


def listen_pcm(
    engine: StreamEngine,
    stream: BinaryIO,
    rate: int = 16000,
    on_detection: OnDetection | None = None,
    source: str = "stdin",
    seconds: float | None = None,
) -> ListenSummary:
    """Raw signed 16-bit little-endian mono PCM at `rate` from a binary stream, until EOF
    or `seconds` of it."""
    fe = engine.rec.frontend
    resampler = (
        None
        if rate == fe.sample_rate
        else soxr.ResampleStream(rate, fe.sample_rate, 1, dtype="float32")
    )
    block_bytes = 2 * max(1, round(rate * engine.settings.hop_ms / 1000))
    summary = ListenSummary(source=source)
    wall0 = time.perf_counter()
    carry = b""
    left = None if seconds is None else 2 * round(seconds * rate)  # bytes still wanted
    try:
        while left is None or left > 0:
            data = stream.read(block_bytes if left is None else min(block_bytes, left))
            if left is not None:
                left -= len(data)
            if not data:
                break
            data = carry + data
            usable = len(data) - len(data) % 2
            carry = data[usable:]
            x = np.frombuffer(data[:usable], "<i2").astype(np.float32) / 32768.0
            if resampler is not None:
                x = resampler.resample_chunk(x)
            _emit(engine, x, on_detection)
        if resampler is not None:
            _emit(
                engine, resampler.resample_chunk(np.zeros(0, np.float32), last=True), on_detection
            )
    except KeyboardInterrupt:
        summary.interrupted = True
    return _finish(engine, summary, wall0)


def _sounddevice():
    try:
        import sounddevice as sd
    except ImportError:
        raise DeviceError(
            "microphone input needs sounddevice; install it with `pip install 'edgetune[mic]'`"
        ) from None
    except OSError:
        raise DeviceError(
            "PortAudio is not installed, so no microphone can be opened; install it with "
            "`apt-get install libportaudio2` (or use --file / - for stdin)"
        ) from None
    return sd


def list_input_devices() -> list[dict]:
    """Input devices: index, name, channels, default sample rate, and which one is the default."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        default_in = sd.default.device[0]
    except Exception as e:  # noqa: BLE001 - any failure here is the user's file or hardware
        raise DeviceError(
            f"cannot list audio devices ({e}); check that a sound server or card is present"
        ) from None
    return [
        {
            "index": i,
            "name": d["name"],
            "channels": int(d["max_input_channels"]),
            "default_samplerate": float(d["default_samplerate"]),
            "default": i == default_in,
        }
        for i, d in enumerate(devices)
        if d["max_input_channels"] > 0
    ]


def _pick_device(device):
    if device is None:
        return None
    if isinstance(device, str) and device.strip().lstrip("-").isdigit():
        return int(device)
    return device


class Microphone:
    """An input stream at `sample_rate`: `read()` gives mono float32 blocks as they arrive.

    Opens at that rate when the device supports it, else at the device's default rate
    and resamples with soxr. Overflows and blocks dropped because the reader fell
    behind (over ~2 s of backlog) are counted, never fatal. Use it as a context manager."""

    def __init__(self, sample_rate: int, device: int | str | None = None, block_ms: float = 20.0):
        sd = _sounddevice()
        dev = _pick_device(device)
        try:
            info = sd.query_devices(dev, "input")
        except Exception as e:  # noqa: BLE001 - any failure here is the user's file or hardware
            what = f"input device {device!r}" if device is not None else "default input device"
            raise DeviceError(
                f"no usable {what} ({e}); plug in a microphone or start the sound server, "
                "and see `edgetune listen --list-devices`"
            ) from None
        if info["max_input_channels"] < 1:
            raise DeviceError(
                f"device {info['name']!r} has no input channels; see `edgetune listen --list-devices`"
            )
        rate = sample_rate
        try:
            sd.check_input_settings(device=dev, samplerate=rate, channels=1, dtype="float32")
        except Exception:  # noqa: BLE001 - any failure here is the user's file or hardware
            rate = int(info["default_samplerate"])
        self._resampler = (
            None
            if rate == sample_rate
            else soxr.ResampleStream(rate, sample_rate, 1, dtype="float32")
        )
        self.name = info["name"]
        self.source = f"microphone {info['name']!r} at {rate} Hz"
        self.overflows = 0
        self.dropped = 0
        self._q: queue.Queue = queue.Queue(maxsize=max(4, int(2000 / block_ms)))
        try:
            self._stream = sd.InputStream(
                device=dev,
                samplerate=rate,
                channels=1,
                dtype="float32",
                blocksize=max(1, int(rate * block_ms / 1000)),
                callback=self._callback,
            )
        except Exception as e:  # noqa: BLE001 - any failure here is the user's file or hardware
            raise DeviceError(
                f"cannot open {info['name']!r} at {rate} Hz ({e}); pick another with --input-device"
            ) from None

    def _callback(self, indata, frames, time_info, status):
        if status.input_overflow:
            self.overflows += 1
        try:
            self._q.put_nowait(indata[:, 0].copy())
        except queue.Full:
            self.dropped += 1

    def __enter__(self):
        self._stream.__enter__()
        return self

    def __exit__(self, *exc):
        return self._stream.__exit__(*exc)

    def read(self, timeout: float = 0.5) -> np.ndarray | None:
        """The next block at the requested rate, or None when none came within `timeout`."""
        try:
            block = self._q.get(timeout=timeout)
        except queue.Empty:
            if not self._stream.active:
                raise DeviceError(
                    f"the input stream of {self.name!r} stopped; is the device still there?"
                ) from None
            return None
        return block if self._resampler is None else self._resampler.resample_chunk(block)

    def flush(self) -> None:
        """Forget what was captured but not read yet (e.g. while a prompt was showing)."""
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                return


def listen_microphone(
    engine: StreamEngine,
    device: int | str | None = None,
    seconds: float | None = None,
    on_detection: OnDetection | None = None,
    on_ready: Callable[[str], None] | None = None,
    block_ms: float = 20.0,
    stop: threading.Event | None = None,
) -> ListenSummary:
    """Capture from a microphone until Ctrl-C, `seconds` of audio, or `stop` is set.

    `on_ready(text)` is called at the first audio block."""
    fe = engine.rec.frontend
    mic = Microphone(fe.sample_rate, device, block_ms)
    summary = ListenSummary(source=mic.source)
    stop = stop or threading.Event()
    wall0 = time.perf_counter()
    announced = False
    try:
        with mic:
            while not stop.is_set():
                if seconds is not None and engine.audio_seconds >= seconds:
                    break
                block = mic.read()
                if block is None:
                    continue
                if not announced:
                    announced = True
                    if on_ready is not None:
                        on_ready(summary.source)
                if seconds is not None:
                    left = round((seconds - engine.audio_seconds) * fe.sample_rate)
                    block = block[: max(0, left)]
                _emit(engine, block, on_detection)
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.overflows = mic.overflows
    summary.dropped_blocks = mic.dropped
    return _finish(engine, summary, wall0)


def read_stdin() -> BinaryIO:
    if sys.stdin is None:
        raise DeviceError("no standard input to read PCM from")
    return sys.stdin.buffer
