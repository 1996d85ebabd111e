"""Terminal output shared by every command: machine-readable JSON (strict: no bare NaN)."""

from __future__ import annotations

import json
from typing import Any

from bertpress.artifact import strict_json


def print_json(data: Any) -> None:
    """`--json` output: indented, non-JSON values (paths, enums) as strings, NaN/inf as null."""
    print(json.dumps(strict_json(data), indent=2, default=str, allow_nan=False))
