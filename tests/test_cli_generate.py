"""`mammogen bundle create|info` and `mammogen generate`: files on disk and one JSON line on stdout."""

import json

import numpy as np
import pytest

from app.cli.main import main
from app.settings import get_settings
from models.errors import BundleIntegrityError, BundleNotFoundError
from models.imaging.files import read_png


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundles") / "tiny"
    assert main(["bundle", "create", "--preset", "tiny", "--random", "--out", str(path), "--size", "96x128"]) == 0
    return path


def test_bundle_create_writes_a_random_weight_bundle_and_info_verifies_it(tiny_bundle, capsys):
    capsys.readouterr()
    assert main(["bundle", "info", str(tiny_bundle)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["random_weights"] is True and info["verified"] is True and info["kind"] == "mambo"
    assert info["geometry"] == {"s": 32, "k": 3, "overlap": 4, "conditioning": "paper", "native_size": [96, 128]}
    assert info["networks"]["patch"]["in_channels"] == 3


def test_dualview_random_bundle(tmp_path, capsys):
    assert (
        main(["bundle", "create", "--preset", "tiny", "--random", "--kind", "dualview", "--out", str(tmp_path / "d")])
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["networks"] == {"dualview": {**info["networks"]["dualview"], "in_channels": 3, "out_channels": 3}}


def test_generate_writes_png16_and_npy_and_prints_one_json_line(tiny_bundle, tmp_path, capsys):
    rc = main(
        ["generate", "--bundle", str(tiny_bundle), "--height", "96", "--width", "128", "--seed", "4", "--steps", "2",
         "--sampler", "dpmsolver", "--stitching", "wavefront", "--count", "2", "--format", "png,npy",
         "--chest-wall", "right", "--device", "cpu", "--images-per-batch", "2", "--out", str(tmp_path)]
    )  # fmt: skip
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["random_weights"] is True and (report["height"], report["width"]) == (96, 128)
    assert [im["seed"] for im in report["images"]] == [4, 5]
    first = report["images"][0]
    run = report["runs"][first["run"]]
    assert len(report["runs"]) == 1 and run["images"] == 2  # both seeds denoised in lock-step
    assert run["stages"]["patch"]["model_evaluations"] > 0 and run["sequential_calls"] > 0
    assert report["model_evaluations"] == run["model_evaluations"]
    png, npy = read_png(first["files"]["png"]), np.load(first["files"]["npy"])
    assert png.shape == npy.shape == (96, 128)
    assert np.abs(png - npy).max() <= 1 / 65535 + 1e-6  # 16-bit PNG keeps the float image


def test_generate_without_a_bundle_says_how_to_make_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAMMOGEN_MAMBO_BUNDLE", str(tmp_path / "missing"))
    get_settings.cache_clear()
    try:
        rc = main(["generate", "--out", str(tmp_path / "o"), "--steps", "1"])
    finally:
        get_settings.cache_clear()
    assert rc == BundleNotFoundError.exit_code
    assert "mammogen bundle create" in capsys.readouterr().err


def test_bundle_info_refuses_a_tampered_bundle(tmp_path, capsys):
    path = tmp_path / "b"
    assert main(["bundle", "create", "--preset", "tiny", "--random", "--out", str(path)]) == 0
    cfg = path / "local" / "config.json"
    cfg.write_text(cfg.read_text().replace('"in_channels": 3', '"in_channels": 3 '))
    assert main(["bundle", "info", str(path)]) == BundleIntegrityError.exit_code
    assert "local/config.json" in capsys.readouterr().err


def test_generate_refuses_bad_sizes_with_the_bad_input_exit_code(tiny_bundle, tmp_path, capsys):
    rc = main(["generate", "--bundle", str(tiny_bundle), "--height", "8", "--width", "96", "--out", str(tmp_path)])
    assert rc == 3 and "smaller than one" in capsys.readouterr().err


def test_generate_dicom_mg_needs_a_view(tiny_bundle, tmp_path, capsys):
    rc = main(["generate", "--bundle", str(tiny_bundle), "--format", "png,dicom-mg", "--out", str(tmp_path / "o")])
    assert rc == 3 and "--format dicom-mg needs --view CC or MLO" in capsys.readouterr().err
