"""Small helpers shared by the CLI commands."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def progress_printer(label: str) -> Callable[[Any], None]:
    """A progress callback that prints about every 10 % to stderr, so stdout stays one JSON line."""
    last = [-1]

    def callback(p: Any) -> None:
        tenth = int(p.fraction * 10)
        if tenth != last[0]:
            last[0] = tenth
            print(f"{label}: {p.stage} {p.fraction:.0%}", file=sys.stderr)

    return callback
