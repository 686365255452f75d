"""`mammogen anomaly-map` end to end on a tiny random-weight MAMBO bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.cli.main import main
from models.errors import BadInputError
from models.imaging.files import read_png, write_png16
from tests.test_superres_cli import tiny_bundle  # noqa: F401  (module-scoped fixture)
from training.phantoms import make_phantom_case


@pytest.fixture(scope="module")
def right_breast(tmp_path_factory):
    case = make_phantom_case(29, (64, 48), lesions=True, laterality="R")
    return write_png16(tmp_path_factory.mktemp("in") / "right.png", case.cc.image)


def test_anomaly_map_writes_every_output_at_the_input_size_and_orientation(tmp_path, tiny_bundle, right_breast):  # noqa: F811
    out = tmp_path / "out"
    argv = ["anomaly-map", str(right_breast), "--lambda", "3", "--seeds", "2", "--out", str(out)]
    assert main([*argv, "--bundle", str(tiny_bundle)]) == 0
    for name in ("heatmap.png", "mask.png", "reconstruction.png", "preprocessed.png"):
        assert read_png(out / name).shape == (64, 48), name
    heat = np.load(out / "heatmap.npy")
    mask = read_png(out / "mask.png")
    assert heat.shape == (64, 48) and set(np.unique(mask)) <= {0.0, 1.0}
    preprocessed = read_png(out / "preprocessed.png")
    assert preprocessed[:, -1].max() > 0.1 and preprocessed[:, 0].max() == 0.0  # chest wall still on the right
    summary = json.loads((out / "anomaly.json").read_text())
    assert summary["threshold_mode"] == "otsu" and summary["lambda"] == 3 and summary["seeds"] == [0, 1]
    assert summary["model_evaluations"] == 2 * 4  # timesteps 3..0 for two seeds


def test_fixed_threshold_is_applied_as_given(tmp_path, tiny_bundle, right_breast):  # noqa: F811
    out = tmp_path / "out"
    argv = ["anomaly-map", str(right_breast), "--lambda", "2", "--seeds", "1", "--out", str(out)]
    argv += ["--threshold-mode", "fixed", "--threshold", "1e9", "--bundle", str(tiny_bundle)]
    assert main(argv) == 0
    summary = json.loads((out / "anomaly.json").read_text())
    assert summary["threshold"] == 1e9 and summary["anomalous_pixels"] == 0


def test_percentile_mode_without_a_threshold_fails_before_loading_the_model(tmp_path, right_breast, capsys):
    argv = ["anomaly-map", str(right_breast), "--threshold-mode", "percentile", "--out", str(tmp_path / "o")]
    assert main([*argv, "--bundle", str(tmp_path / "no-bundle")]) == BadInputError.exit_code
    assert "needs a threshold" in capsys.readouterr().err


def test_an_empty_file_fails_with_the_bad_input_exit_code(tmp_path, tiny_bundle):  # noqa: F811
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    argv = ["anomaly-map", str(empty), "--out", str(tmp_path / "o"), "--bundle", str(tiny_bundle)]
    assert main(argv) == BadInputError.exit_code


def test_a_blank_image_fails_with_the_bad_input_exit_code(tmp_path, tiny_bundle, capsys):  # noqa: F811
    blank = write_png16(tmp_path / "blank.png", np.zeros((64, 64), np.float32))
    argv = ["anomaly-map", str(blank), "--lambda", "2", "--seeds", "1", "--out", str(tmp_path / "o")]
    assert main([*argv, "--bundle", str(tiny_bundle)]) == BadInputError.exit_code
    assert "no breast" in capsys.readouterr().err
