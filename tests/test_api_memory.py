"""Decompression bombs cost the API nothing: refused from the header, never decoded.

The API runs as its own process (uvicorn, as deployed), so its memory is read from /proc: the peak
resident size (VmHWM, reset just before the burst) while 8 bombs arrive at once. An 8000 x 8000
1-bit PNG is 8 KB on the wire and 64 MB as 8-bit pixels (256 MB as float32): decoding even one of
them would break the bound below.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.service_support import (
    ROOT,
    black_png,
    free_port,
    purge_queue,
    service_env,
    settings_for,
    unique_queue,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Peak RSS growth allowed during the burst: less than one bomb's 8-bit pixels (64 MB).
PEAK_GROWTH_BOUND_MB = 48
SIDE = 8000


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) // 1024  # MB
    return out


def test_eight_concurrent_bombs_are_refused_from_the_header_within_a_memory_bound(
    tmp_path,
    redis_conn,
    mambo_bundle,
    dualview_bundle,
):
    bomb = black_png(SIDE, SIDE)
    assert len(bomb) < 16 * 1024
    queue = unique_queue("bombs")
    settings = settings_for(tmp_path, queue, mambo_bundle=mambo_bundle, dualview_bundle=dualview_bundle)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)],
        env=service_env(settings),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as c:

            def up() -> bool:
                try:
                    return c.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(up, 120, interval=0.5, what="the API process")
            # warm up every code path the bombs take (imports, thread pool, Redis connection)
            warm = c.post("/anomaly-map", files={"file": ("b.png", bomb, "image/png")}, data={"steps": "2"})
            assert warm.status_code == 413
            Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
            before = _status(server.pid)

            def send(i: int) -> httpx.Response:
                route, fields = ("/super-resolve", {"scale": "2"}) if i % 2 else ("/anomaly-map", {})
                return c.post(route, files={"file": (f"b{i}.png", bomb, "image/png")}, data={"steps": "2", **fields})

            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(send, range(8)))
            after = _status(server.pid)
        assert [r.status_code for r in answers] == [413] * 8
        for r in answers:
            detail = r.json()["detail"]
            assert "decompression bomb" in detail and f"{SIDE}x{SIDE}" in detail, detail
        growth = after["VmHWM"] - before["VmRSS"]
        print(f"API RSS before {before['VmRSS']} MB, peak during 8 bombs {after['VmHWM']} MB (+{growth} MB)")
        assert growth < PEAK_GROWTH_BOUND_MB, f"peak RSS grew {growth} MB during the burst"
    finally:
        server.terminate()
        server.wait(20)
        purge_queue(redis_conn, queue)
