"""CI cannot pass by skipping: what a test needs and CI provides is a failure there, a skip elsewhere."""

from __future__ import annotations

import pytest

from tests.service_support import missing, redis_or_skip


def test_a_missing_requirement_skips_on_a_developer_machine(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no widget"):
        missing("no widget")


def test_a_missing_requirement_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="required under CI"):
        missing("no widget")


def test_an_unreachable_redis_fails_the_service_tests_under_ci(monkeypatch):
    import tests.service_support as support

    monkeypatch.setenv("CI", "1")
    monkeypatch.setattr(support, "REDIS_URL", "redis://127.0.0.1:1/13")  # nothing listens on port 1
    with pytest.raises(pytest.fail.Exception, match="no Redis"):
        redis_or_skip()
