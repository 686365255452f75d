"""`mammogen serve` (the README's first command) from a clean directory: API + worker + embedded
Redis come up, a /generate request is served end to end, and Ctrl-C/SIGTERM leaves nothing running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.settings import DEMO_BUNDLE_DIR
from tests.service_support import REDIS_URL, ROOT, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out |= {int(p) for p in (task / "children").read_text().split()}
        except OSError:
            continue
    for child in list(out):
        out |= _children(child)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _serve(cwd: Path, env_extra: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """`mammogen serve --port P` in ``cwd`` with no MAMMOGEN_* settings but ``env_extra``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAMMOGEN_")}
    env.update(env_extra, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    script = Path(sys.executable).parent / "mammogen"
    cmd = [str(script)] if script.exists() else [sys.executable, "-c", "from app.cli import main; main()"]
    log = open(cwd / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [*cmd, "serve", "--port", str(port)], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    return proc, f"http://127.0.0.1:{port}"


def _generate_end_to_end(proc: subprocess.Popen[bytes], base: str, cwd: Path, body: dict) -> dict:
    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError((cwd / "serve.log").read_text()[-3000:])
        try:
            return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 180, interval=0.5, what="mammogen serve to be ready")
    with httpx.Client(base_url=base, timeout=60) as client:
        r = client.post("/generate", json=body)
        assert r.status_code == 202, r.text
        info = wait_for(
            lambda: (
                (j := client.get(r.headers["Location"], params={"wait": 10}).json())["status"]
                in ("succeeded", "failed")
                and j
            ),
            180,
            what="the job",
        )
        assert info["status"] == "succeeded", f"{info}\n{(cwd / 'serve.log').read_text()[-3000:]}"
        for link in info["results"]:
            assert client.get(link["url"]).status_code == 200
    return info


def _stop_and_check_nothing_left(proc: subprocess.Popen[bytes]) -> None:
    children = _children(proc.pid)
    assert children, "serve should run a worker and an embedded redis-server"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in children):
        time.sleep(0.2)
    assert not [p for p in children if _alive(p)], "serve left processes behind"


def test_unreachable_configured_redis_is_replaced_by_a_working_embedded_one(tmp_path):
    from app.cli.serve import resolve_redis
    from workers.queueing import connect

    url, embedded = resolve_redis("redis://127.0.0.1:1/0", tmp_path / "r")
    try:
        assert embedded is not None and url.startswith("unix://")
        conn = connect(url)
        assert conn.ping() and conn.set("k", "v") and conn.get("k") == b"v"
        conn.close()
    finally:
        embedded.stop()


def test_api_only_serve_never_embeds_a_private_redis(tmp_path):
    from app.cli.serve import resolve_redis

    assert resolve_redis("redis://127.0.0.1:1/0", tmp_path / "r", allow_embedded=False) == (
        "redis://127.0.0.1:1/0",
        None,
    )
    assert not (tmp_path / "r").exists()


def test_reachable_configured_redis_is_used_as_is(tmp_path, redis_conn):
    from app.cli.serve import resolve_redis

    assert resolve_redis(REDIS_URL, tmp_path / "r") == (REDIS_URL, None)


def test_serve_with_no_redis_configured_embeds_one_and_serves_generate(tmp_path, dualview_bundle):
    proc, base = _serve(tmp_path, {"MAMMOGEN_DUALVIEW_BUNDLE": str(dualview_bundle)})
    try:
        info = _generate_end_to_end(proc, base, tmp_path, {"model": "dualview", "steps": 2, "formats": ["png16"]})
        assert (tmp_path / "results" / "jobs" / info["id"] / "pair00_cc.png").is_file()
        _stop_and_check_nothing_left(proc)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.skipif(
    not (DEMO_BUNDLE_DIR / "demo-mambo" / "manifest.json").is_file(),
    reason="the demo bundles (models/demo_bundles) are not in this checkout yet",
)
def test_readme_first_command_serves_generate_with_the_demo_bundles_from_a_clean_directory(tmp_path):
    proc, base = _serve(tmp_path, {})
    try:
        body = {"height": 192, "width": 128, "steps": 2, "seed": 0, "formats": ["png16", "dicom"]}
        info = _generate_end_to_end(proc, base, tmp_path, body)
        assert info["summary"]["model"]["name"] == "demo-mambo"
        _stop_and_check_nothing_left(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
