"""Render MIDI notes from a General MIDI SoundFont (SF2) with tinysoundfont.

tinysoundfont is a small self-contained wheel (no system synthesiser); the
default SoundFont is the General MIDI set that the `pretty-midi` wheel ships
(TimGM6mb.sf2, 6 MB). Any other SF2 can be given, e.g. Debian's
fluid-soundfont-gm (/usr/share/sounds/sf2/FluidR3_GM.sf2), to hear the same
notes played from samples a model never heard.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune.errors import DataError

SR = 16000
CHANNEL = 0
FLUSH = 4096  # samples


@dataclass(frozen=True)
class Note:
    """One key press: when (seconds from the start), for how long, which key, how hard."""

    start: float
    seconds: float
    key: int
    velocity: int


def default_soundfont() -> Path | None:
    """pretty-midi's General MIDI SoundFont, found without importing pretty-midi."""
    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "TimGM6mb.sf2"
    return path if path.is_file() else None


def renderer_available() -> bool:
    return importlib.util.find_spec("tinysoundfont") is not None


def resolve_soundfont(path: str | Path | None) -> Path:
    """The SoundFont to use: `path`, else the default; DataError saying how to get one."""
    if not renderer_available():
        raise DataError("the instruments task needs the tinysoundfont renderer; "
                        "install it with pip install 'edgetune[synth]'")
    if path is None:
        found = default_soundfont()
        if found is None:
            raise DataError("no default SoundFont (pretty-midi's TimGM6mb.sf2); install it with "
                            "pip install 'edgetune[synth]', or give --soundfont FILE.sf2")
        return found
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such SoundFont file; give an .sf2 file")
    return path


class SoundFont:
    """One loaded SoundFont; renders notes of one program at a time, mono float32 at SR."""

    def __init__(self, path: str | Path, sample_rate: int = SR):
        import tinysoundfont

        self.path = Path(path)
        self.sample_rate = sample_rate
        self._synth = tinysoundfont.Synth(samplerate=sample_rate)
        try:
            self._sfid = self._synth.sfload(str(self.path))
        except RuntimeError:  # what tinysoundfont raises for a file it cannot parse
            raise DataError(f"{self.path}: not a readable SoundFont; give a General MIDI .sf2 file") from None

    def preset_name(self, program: int) -> str | None:
        """The SoundFont's name for a General MIDI program (bank 0), None when it lacks it."""
        return self._synth.sfpreset_name(self._sfid, 0, program)

    def check_programs(self, programs) -> None:
        missing = [p for p in programs if self.preset_name(p) is None]
        if missing:
            raise DataError(f"{self.path}: lacks General MIDI programs {missing} (bank 0); "
                            "give a complete General MIDI SoundFont")

    def render(self, program: int, notes: list[Note], seconds: float, bend_cents: float = 0.0) -> np.ndarray:
        """`seconds` of audio of `notes` played on `program`, detuned by `bend_cents`.

        Every call starts from silence (all voices stopped, pitch wheel set), so a
        render depends only on its arguments."""
        synth = self._synth
        synth.sounds_off()
        synth.generate(FLUSH)  # stopped voices still fade for a few ms: let them finish unheard
        synth.program_select(CHANNEL, self._sfid, 0, program)
        synth.pitchbend_range(CHANNEL, 2)
        synth.pitchbend(CHANNEL, int(np.clip(8192 + bend_cents / 200 * 8192, 0, 16383)))
        events = sorted([(n.start, 1, n) for n in notes] + [(n.start + n.seconds, 0, n) for n in notes],
                        key=lambda e: (e[0], e[1]))  # offs before ons at the same instant
        total = round(seconds * self.sample_rate)
        out, done = [], 0
        for t, on, note in events:
            done += self._generate(out, min(round(t * self.sample_rate), total) - done)
            if on:
                synth.noteon(CHANNEL, note.key, note.velocity)
            else:
                synth.noteoff(CHANNEL, note.key)
        self._generate(out, total - done)
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def _generate(self, out: list, n: int) -> int:
        if n <= 0:
            return 0
        stereo = np.frombuffer(self._synth.generate(n), dtype=np.float32).reshape(n, 2)
        out.append(stereo.mean(axis=1))
        return n
