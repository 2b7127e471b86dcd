"""Where edgetune keeps what it generates (outside git): EDGETUNE_HOME, default ~/.cache/edgetune."""

from __future__ import annotations

import os
from pathlib import Path

REPO_MODELS = Path(__file__).resolve().parents[1] / "models"


def home() -> Path:
    return Path(os.environ.get("EDGETUNE_HOME", Path.home() / ".cache" / "edgetune")).expanduser()


def corpus_dir(task: str) -> Path:
    return home() / "corpus" / task
