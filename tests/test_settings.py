import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import DEMO_BUNDLE_DIR, Settings


def test_settings_read_from_prefixed_environment(monkeypatch):
    monkeypatch.setenv("MAMMOGEN_REDIS_URL", "redis://example:6380/2")
    monkeypatch.setenv("MAMMOGEN_RESULT_DIR", "/tmp/mg-results")
    monkeypatch.setenv("MAMMOGEN_DEVICE", "cuda:1")
    monkeypatch.setenv("MAMMOGEN_DTYPE", "bfloat16")
    monkeypatch.setenv("MAMMOGEN_API_KEY", "s3cret")
    monkeypatch.setenv("MAMMOGEN_MAX_UPLOAD_BYTES", "1024")
    monkeypatch.setenv("MAMMOGEN_JOB_TIMEOUT_S", "60")
    monkeypatch.setenv("MAMMOGEN_MAMBO_BUNDLE", "/bundles/vindr")
    s = Settings(_env_file=None)
    assert s.redis_url == "redis://example:6380/2"
    assert s.result_dir == Path("/tmp/mg-results")
    assert s.device == "cuda:1"
    assert s.dtype == "bfloat16"
    assert s.api_key is not None and s.api_key.get_secret_value() == "s3cret"
    assert s.max_upload_bytes == 1024
    assert s.job_timeout_s == 60
    assert s.bundle_path("mambo") == Path("/bundles/vindr")


def test_settings_defaults_need_nothing_installed(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("MAMMOGEN_"):
            monkeypatch.delenv(key)
    s = Settings(_env_file=None)
    assert s.redis_url is None  # serve embeds a Redis
    assert s.api_key is None
    assert s.bundle_path("dualview") == DEMO_BUNDLE_DIR / "demo-dualview"


def test_api_key_is_not_printed(monkeypatch):
    monkeypatch.setenv("MAMMOGEN_API_KEY", "s3cret")
    assert "s3cret" not in repr(Settings(_env_file=None))


@pytest.mark.parametrize(
    ("key", "value"),
    [("MAMMOGEN_DEVICE", "gpu"), ("MAMMOGEN_DTYPE", "int8"), ("MAMMOGEN_MAX_UPLOAD_BYTES", "-1")],
)
def test_bad_settings_are_refused_with_the_field_named(monkeypatch, key, value):
    monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError) as err:
        Settings(_env_file=None)
    assert key.removeprefix("MAMMOGEN_").lower() in str(err.value)


def test_a_worker_leaves_one_core_to_the_rest_of_the_service_and_shares_the_others():
    cores = len(os.sched_getaffinity(0))
    assert Settings(torch_threads=0).worker_threads() == max(1, cores - 1)
    assert Settings(torch_threads=0).worker_threads(workers_on_host=cores) == 1
    assert Settings(torch_threads=3).worker_threads(workers_on_host=8) == 3


@pytest.mark.parametrize("value", ["auto", "reference", "optimised", "bfloat16+channels_last+sdpa", "float32+sdpa"])
def test_acceleration_settings_are_names_or_labels(value):
    assert Settings(acceleration=value).acceleration == value


@pytest.mark.parametrize("value", ["fast", "bfloat16 + sdpa", "int8+sdpa"])
def test_unknown_acceleration_settings_are_refused_at_start_up(value):
    with pytest.raises(ValidationError):
        Settings(acceleration=value)
