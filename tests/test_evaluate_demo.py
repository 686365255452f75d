"""`mammogen evaluate demo`: the grading command end to end on tiny random bundles (which must fail)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from app.cli.evaluate.gates import GATES, Check, GateResult, ge, le, service_defaults
from app.cli.main import main
from models.bundle import create_random_bundle
from models.schedulers import RECIPE_SCHEDULE


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> tuple[int, Path, str]:
    root = tmp_path_factory.mktemp("grade")
    mambo = create_random_bundle(
        root / "mambo", preset="tiny", schedule=RECIPE_SCHEDULE, conditioning="aligned", native_size=(96, 96)
    )
    dualview = create_random_bundle(root / "dv", kind="dualview", preset="tiny", schedule=RECIPE_SCHEDULE)
    out = root / "out"
    args = [
        "evaluate",
        "demo",
        "--quick",
        "--bundle",
        str(mambo),
        "--dualview-bundle",
        str(dualview),
        "--out",
        str(out),
    ]

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main([*args, "--out", str(out)])
    return code, out, buf.getvalue()


@pytest.mark.slow
def test_random_bundles_fail_the_gates_and_the_exit_status_says_so(graded):
    code, out, text = graded
    assert code == 1
    assert "**FAIL**" in text and "RANDOM weights" in text
    report = json.loads((out / "report.json").read_text())
    assert [g["gate"] for g in report["gates"]] == [
        "stage 1",
        "full images",
        "conditioning",
        "super-resolution",
        "anomaly maps",
        "dual-view",
    ]
    assert not all(g["passed"] for g in report["gates"])
    for gate in report["gates"]:
        assert gate["checks"], gate["gate"]
        for check in gate["checks"]:
            assert check["name"] in text and check["limit"] in text
        for name in gate["sheets"]:
            assert (out / name).stat().st_size > 0  # the contact sheet each figure was computed from
    assert "## Quality gates" in (out / "report.md").read_text()
    assert (out / "showcase.png").stat().st_size > 0


@pytest.mark.slow
def test_stage1_gate_reports_the_phantom_baseline_and_the_failure_kinds(graded):
    _, out, _ = graded
    stage1 = json.loads((out / "report.json").read_text())["gates"][0]
    assert stage1["details"]["samples"] == 4
    assert "/" in stage1["details"]["phantoms_passing"]
    assert len(stage1["details"]["area_range"]) == 2


def test_checks_pass_and_fail_on_their_limits_and_nan_fails():
    assert ge("x", 0.9, 0.9).passed and not ge("x", 0.89, 0.9).passed
    assert le("x", 1.3, 1.3).passed and not le("x", 1.31, 1.3).passed
    assert not ge("x", float("nan"), 0.0).passed and not le("x", float("inf"), 3.0).passed
    gate = GateResult("g", [Check("a", 1, ">= 1", True), Check("b", 0, ">= 1", False)])
    assert not gate.passed and "showcase" not in gate.to_dict()


def test_gates_sample_with_the_services_own_defaults():
    defaults = service_defaults()
    from app.api.schemas import AnomalyMapParams
    from models.options import default_sampling

    for kind, gate in (
        ("mambo", "generate"),
        ("dualview", "dualview"),
        ("superres", "superres"),
        ("anomaly", "anomaly"),
    ):
        assert (defaults[gate].options.sampler, defaults[gate].options.steps) == default_sampling(kind)
    assert defaults["anomaly"].lam == AnomalyMapParams.model_fields["timestep"].default
    assert set(GATES) == {"stage1", "full", "conditioning", "superres", "anomaly", "dualview"}


def test_an_unknown_gate_is_a_clear_cli_error(tmp_path, capsys):
    assert main(["evaluate", "demo", "--gates", "stage9", "--out", str(tmp_path)]) != 0
    assert "stage9" in capsys.readouterr().err
