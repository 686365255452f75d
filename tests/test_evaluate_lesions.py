"""`mammogen evaluate lesions --quick` end to end on a tiny random bundle with a lesion network."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from app.cli.evaluate.lesions import CSV_COLUMNS, patch_kid
from app.cli.main import main
from models.bundle import create_random_bundle
from models.errors import BadInputError
from models.metrics.features import PixelExtractor
from training.lesions import EVAL_FIRST_SEED


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return create_random_bundle(
        tmp_path_factory.mktemp("b") / "mambo",
        preset="tiny",
        lesion_network=True,
        conditioning="aligned",
        native_size=(192, 144),
    )


@pytest.fixture(scope="module")
def evaluated(bundle, tmp_path_factory) -> tuple[int, Path, str]:
    out = tmp_path_factory.mktemp("eval") / "out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["evaluate", "lesions", "--quick", "--bundle", str(bundle), "--out", str(out)])
    return code, out, buf.getvalue()


def test_the_quick_run_writes_every_figure_and_picture(evaluated):
    code, out, text = evaluated
    assert code == 0
    for section in ("(a) Contrast and size", "(b) Does the project's anomaly map", "(c) Patch KID", "(d) Seams"):
        assert section in text
    assert "RANDOM weights" in text and "held-out evaluation block" in text
    report = json.loads((out / "report.json").read_text())
    assert report["plan"]["cases"] == 2 and report["views"] == 4
    assert set(report["anomaly"]) == {"real", "inserted"}
    for which in ("real", "inserted"):
        assert 0.0 <= report["anomaly"][which]["auroc"] <= 1.0
    assert {"inserted_vs_real", "real_vs_real_floor", "healthy_vs_real"} <= set(report["kid"]["all kinds"])
    assert "pixels" in report["kid"]["extractor"]  # --quick takes the weight-free extractor
    assert set(report["seams"]["all"]) >= {"inserted", "real", "healthy"}
    for name in ("report.md", "examples.png", "examples-zoom.png"):
        assert (out / name).stat().st_size > 0
    rows = (out / "lesions.csv").read_text().splitlines()
    assert rows[0].split(",") == list(CSV_COLUMNS) and len(rows) == 1 + len(report["lesions"])


def test_every_inserted_lesion_is_paired_with_the_phantom_lesion_at_its_place(evaluated):
    from training.phantoms import make_phantom_case

    _, out, _ = evaluated
    report = json.loads((out / "report.json").read_text())
    for row in report["lesions"]:
        case = make_phantom_case(row["seed"], (192, 144), lesions=True)
        view = case.cc if row["projection"] == "CC" else case.mlo
        real = [les for les in view.lesions if les.kind == row["kind"]]
        assert any(np.allclose(les.center, row["center"], atol=0.06) for les in real), row
        assert row["real"]["contrast"] > 0  # the real lesion is brighter than its healthy twin
        assert row["seed"] >= EVAL_FIRST_SEED
    assert {r["laterality"] for r in report["lesions"]} == {"L", "R"}  # both breasts in the fixed seeds


def test_seeds_of_the_lesion_training_block_and_a_single_case_are_refused(bundle, tmp_path, capsys):
    base = ["evaluate", "lesions", "--bundle", str(bundle), "--out", str(tmp_path)]
    assert main([*base, "--first-seed", "100050"]) == BadInputError.exit_code
    assert "lies in the lesion training block" in capsys.readouterr().err
    assert main([*base, "--cases", "1"]) == BadInputError.exit_code
    assert "at least 2" in capsys.readouterr().err


def test_the_oracle_insertion_scores_exactly_like_the_real_lesions(bundle, tmp_path):
    out = tmp_path / "oracle"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["evaluate", "lesions", "--quick", "--oracle", "--bundle", str(bundle), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "ORACLE" in report["header"]["bundle"]
    kid = report["kid"]["all kinds"]
    assert kid["inserted_vs_real"] == pytest.approx(kid["real_vs_real_floor"], abs=1e-12)
    for row in report["lesions"]:
        assert row["inserted_contrast_in_real_mask"] == pytest.approx(row["real"]["contrast"], abs=1e-6)
        assert row["seam"]["inserted"]["ratio"] == pytest.approx(row["seam"]["real"]["ratio"], nan_ok=True)
    for group in report["contrast_size"].values():
        assert group["paired_contrast_ratio_in_real_mask"]["median"] == pytest.approx(1.0)
        assert group["paired_size_ratio"]["median"] == pytest.approx(1.0)
    assert report["anomaly"]["inserted"]["raw_intensity_auroc"] > 0.5  # the real lesions are brighter


def test_patch_kid_compares_halves_so_copies_of_the_real_lesions_score_like_the_floor():
    rng = np.random.default_rng(0)
    crops = []
    for case in range(16):
        real = rng.random((16, 16)).astype(np.float32)
        crops.append({"case": case, "kind": "mass", "real": real, "inserted": real.copy(), "healthy": real * 0.2})
    kid = patch_kid(crops, PixelExtractor(size=8))["all kinds"]
    assert kid["patches"] == [8, 8]
    assert kid["inserted_vs_real"] == pytest.approx(kid["real_vs_real_floor"], abs=1e-9)
    assert kid["healthy_vs_real"] > 10 * abs(kid["real_vs_real_floor"])
