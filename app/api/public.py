"""What the API may tell a client about the server: bundle names, never the paths they live under."""

from __future__ import annotations

from pathlib import Path


def bundle_label(path: str | Path | None) -> str | None:
    """A bundle as clients see it: its folder name."""
    return Path(path).name if path else None


def without_server_paths(text: str, path: str | Path | None) -> str:
    """``text`` with the folder holding ``path`` removed, so messages name the bundle, not the disk."""
    if not path:
        return text
    parent = str(Path(path).parent)
    return text.replace(parent + "/", "").replace(parent, "")
