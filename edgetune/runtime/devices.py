"""Device profiles: one TOML file per board in `devices/` (repo root, beside edgetune/).

`EDGETUNE_DEVICES=/some/folder` points elsewhere (an installed package has no repo root).
A profile states the board (cpu, cores, memory) and the budgets `edgetune bench` checks.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from edgetune.errors import DeviceError

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ModuleNotFoundError:
        _toml = None

REQUIRED = (
    "description",
    "cpu",
    "cores",
    "threads",
    "memory_mb",
    "model_size_budget_kb",
    "latency_budget_ms",
    "precision",
)


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    cpu: str
    cores: int
    threads: int
    memory_mb: int
    model_size_budget_kb: float
    latency_budget_ms: float
    precision: str  # preferred: fp32 | int8
    memory_budget_mb: float | None = None  # what edgetune may use; None: a quarter of memory_mb
    rtf_budget: float = 0.5  # streaming compute time / audio time
    path: str = ""

    @property
    def memory_limit_mb(self) -> float:
        return self.memory_budget_mb if self.memory_budget_mb is not None else self.memory_mb / 4

    def to_dict(self) -> dict:
        return asdict(self)


def devices_dir() -> Path:
    env = os.environ.get("EDGETUNE_DEVICES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "devices"


def _parse(path: Path) -> DeviceProfile:
    if _toml is None:
        raise DeviceError(
            "reading device profiles needs Python 3.11 (tomllib) or `pip install tomli`"
        )
    try:
        d = _toml.loads(path.read_text())
    except Exception as e:  # noqa: BLE001 - any failure here is the user's file or hardware
        raise DeviceError(f"{path}: not valid TOML ({e}); fix the profile") from None
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise DeviceError(
            f"{path}: profile lacks {', '.join(missing)}; add them (see devices/raspberry-pi-4.toml)"
        )
    if d["precision"] not in ("fp32", "int8"):
        raise DeviceError(f"{path}: precision {d['precision']!r} is not fp32 or int8")
    known = {f for f in DeviceProfile.__dataclass_fields__} - {"name", "path"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise DeviceError(f"{path}: unknown profile keys {', '.join(unknown)}")
    try:
        return DeviceProfile(
            name=path.stem,
            path=str(path),
            description=str(d["description"]),
            cpu=str(d["cpu"]),
            cores=int(d["cores"]),
            threads=int(d["threads"]),
            memory_mb=int(d["memory_mb"]),
            model_size_budget_kb=float(d["model_size_budget_kb"]),
            latency_budget_ms=float(d["latency_budget_ms"]),
            precision=str(d["precision"]),
            memory_budget_mb=None
            if d.get("memory_budget_mb") is None
            else float(d["memory_budget_mb"]),
            rtf_budget=float(d.get("rtf_budget", 0.5)),
        )
    except (TypeError, ValueError) as e:
        raise DeviceError(f"{path}: bad value ({e})") from None


def load_profiles(folder: str | os.PathLike | None = None) -> dict[str, DeviceProfile]:
    """name -> profile, for every *.toml in the devices folder."""
    folder = Path(folder) if folder is not None else devices_dir()
    if not folder.is_dir():
        raise DeviceError(
            f"{folder}: no devices folder; set EDGETUNE_DEVICES to a folder of *.toml profiles"
        )
    return {p.stem: _parse(p) for p in sorted(folder.glob("*.toml"))}


def get_profile(name: str, folder: str | os.PathLike | None = None) -> DeviceProfile:
    """A profile by name (file stem), or a path to a .toml file."""
    p = Path(name)
    if p.suffix == ".toml" and p.is_file():
        return _parse(p)
    profiles = load_profiles(folder)
    if name not in profiles:
        raise DeviceError(
            f"no device profile {name!r}; known: {', '.join(profiles) or 'none'} (see `edgetune devices`)"
        )
    return profiles[name]
