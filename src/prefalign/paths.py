"""Where prefalign looks for data and keeps its caches.

- Data: ``$PREFALIGN_DATA_DIR`` if set, else ``../shared/data`` beside the project checkout
  (the folder of public data sets this project is developed against), else ``./data``.
- Cache (converted embedded models, tiny-world pre-training): ``$PREFALIGN_CACHE_DIR``, else
  ``~/.cache/prefalign``.
"""

from __future__ import annotations

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    env = os.environ.get("PREFALIGN_DATA_DIR")
    if env:
        return Path(env)
    beside_checkout = _REPO_ROOT.parent / "shared" / "data"
    if beside_checkout.is_dir():
        return beside_checkout
    return Path.cwd() / "data"


def data_path(*parts: str) -> Path:
    """A file under the data folder; raises FileNotFoundError naming the folder and the setting."""
    path = default_data_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist. Point PREFALIGN_DATA_DIR (or the command's data-dir setting) "
            f"at a folder holding {'/'.join(parts)}."
        )
    return path


def cache_dir() -> Path:
    env = os.environ.get("PREFALIGN_CACHE_DIR")
    path = Path(env) if env else Path.home() / ".cache" / "prefalign"
    path.mkdir(parents=True, exist_ok=True)
    return path
