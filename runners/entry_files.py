"""Reading the JSON files of store entries and model directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: Path) -> Any:
    """The JSON document at ``path`` (UTF-8)."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
