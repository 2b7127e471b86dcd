"""A virtual microphone (DESIGN.md, "Virtual microphone") and a driver that answers prompts.

PulseAudio's null sink `vmic`, whose monitor is the default input; a `pacat` stream keeps
it rendering (else a capture stream gets nothing until something plays). The daemon is
started when none runs and stopped again on exit; otherwise the defaults are restored.

    with VirtualMic() as mic:                   # raises Unavailable(reason) when it cannot
        code, out, err, prompted = drive_prompts(["edgetune", "record", ...], mic, sounds.get)

Used by tests/test_listen.py, tests/test_record.py and tools/personal_demo.py.
"""

from __future__ import annotations

import shutil
import subprocess
import time


class Unavailable(RuntimeError):
    """PulseAudio or PortAudio is missing, or the daemon or the sink could not start."""


def _run(*cmd, timeout=10):
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)


class VirtualMic:
    def __init__(self, sink: str = "vmic"):
        self.sink = sink
        self.started = False
        self.module = None
        self.old: dict[str, str] = {}
        self.keep = None
        self.zeros = None

    def start(self) -> str:
        missing = [t for t in ("pulseaudio", "pactl", "pacat", "paplay") if shutil.which(t) is None]
        if missing:
            raise Unavailable(
                f"virtual microphone needs {', '.join(missing)}: "
                "apt-get install pulseaudio pulseaudio-utils libportaudio2"
            )
        try:
            import sounddevice  # noqa: F401
        except (ImportError, OSError) as e:
            raise Unavailable(
                f"sounddevice/PortAudio unavailable ({e}): "
                "apt-get install libportaudio2; pip install sounddevice"
            ) from None
        if _run("pulseaudio", "--check").returncode != 0:
            r = _run(
                "pulseaudio", "-D", "-n", "--exit-idle-time=-1",
                "--load=module-native-protocol-unix", f"--load=module-null-sink sink_name={self.sink}",
            )  # fmt: skip
            if r.returncode != 0 or _run("pulseaudio", "--check").returncode != 0:
                raise Unavailable(f"pulseaudio could not start: {r.stderr.strip()[-300:]}")
            self.started = True
        if self.sink not in _run("pactl", "list", "short", "sinks").stdout:
            r = _run("pactl", "load-module", "module-null-sink", f"sink_name={self.sink}")
            if r.returncode != 0:
                self.stop()
                raise Unavailable(f"cannot create the null sink: {r.stderr.strip()}")
            self.module = r.stdout.strip()
        info = _run("pactl", "info").stdout
        self.old = {
            k: ln.split(":", 1)[1].strip()
            for ln in info.splitlines()
            for k in ("Default Sink", "Default Source")
            if ln.startswith(k)
        }
        _run("pactl", "set-default-sink", self.sink)
        _run("pactl", "set-default-source", f"{self.sink}.monitor")
        self.zeros = open("/dev/zero", "rb")  # noqa: SIM115 - closed in stop()
        self.keep = subprocess.Popen(  # keep the sink rendering
            ["pacat", "-p", f"--device={self.sink}", "--latency-msec=20", "--raw",
             "--format=s16le", "--rate=16000", "--channels=1"],
            stdin=self.zeros, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        return self.sink

    def stop(self) -> None:
        if self.keep is not None:
            self.keep.terminate()
            try:
                self.keep.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.keep.kill()
            self.keep = None
        if self.zeros is not None:
            self.zeros.close()
            self.zeros = None
        if self.started:
            _run("pulseaudio", "-k")
            self.started = False
            return
        if self.module:
            _run("pactl", "unload-module", self.module)
            self.module = None
        if self.old.get("Default Sink"):
            _run("pactl", "set-default-sink", self.old["Default Sink"])
        if self.old.get("Default Source"):
            _run("pactl", "set-default-source", self.old["Default Source"])

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def play(mic: str, path) -> None:
    subprocess.run(["paplay", f"--device={mic}", str(path)], check=True, timeout=20)


def drive_prompts(cmd, mic: str, sound_for, timeout: float = 90, cwd=None):
    """Run `cmd`; at each `say: <label>` line it prints on stderr, play `sound_for(label)`
    (a wav path, or None for silence) into the virtual microphone `mic`.
    Returns (returncode, stdout, stderr, labels prompted)."""
    p = subprocess.Popen(
        [str(c) for c in cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    prompted, err = [], ""
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = p.stderr.readline()
            if not line:
                break
            err += line
            if line.startswith("say: "):
                label = line.split(":", 1)[1].strip()
                prompted.append(label)
                sound = sound_for(label)
                if sound is not None:
                    play(mic, sound)
        out, rest = p.communicate(timeout=max(5, deadline - time.time()))
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, out, err + rest, prompted
