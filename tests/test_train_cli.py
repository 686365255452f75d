"""`mammogen train`: stages on a DICOM folder, resume, export, and the demo command end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.cli.main import main
from models.bundle import load_bundle
from models.dualview import DualViewPipeline
from models.errors import BadInputError
from models.geometry import MamboGeometry
from models.mambo import MamboPipeline
from models.options import SamplingOptions
from training.demo import DEMO_NOTE, DemoPlan, phantom_images, run_demo
from training.loop import read_log

TINY = ["--preset", "tiny", "--batch-size", "2", "--warmup-steps", "1", "--log-every", "1", "--no-progress"]
GEOM = ["--patch-size", "16", "--scale", "3", "--overlap", "4", "--mixed-precision", "no", "--sample-every", "0"]


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two phantom breasts as MG DICOM (CC + MLO each) plus one file that is not an image."""
    root = tmp_path_factory.mktemp("phantoms")
    assert main(["phantoms", "--count", "2", "--out", str(root), "--size", "96x72", "--format", "dicom"]) == 0
    (root / "notes.dcm").write_bytes(b"this is not a DICOM file")
    return root


def test_train_stage_on_dicom_folder_skips_bad_files_and_resumes(
    phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["train", "stage3", "--data", str(phantom_dir), "--out", str(run), *TINY, *GEOM]
    assert main([*args, "--steps", "2"]) == 0
    out = capsys.readouterr()
    assert "indexed 4 images" in out.out and "notes.dcm" in (run / "cache" / "index.errors.csv").read_text()
    assert [r["step"] for r in read_log(run)] == [1, 2]
    run_json = json.loads((run / "run.json").read_text())
    assert run_json["meta"]["network"] == "patch" and run_json["data"]["images"]["images"] == 4
    assert run_json["meta"]["geometry"]["native_size"] == [96, 72]
    # the recipe is the default: v-prediction, x0 clipped, aligned context (4 input channels)
    assert run_json["meta"]["schedule"]["prediction_type"] == "v_prediction"
    assert run_json["meta"]["schedule"]["clip_sample"] is True
    assert run_json["meta"]["geometry"]["conditioning"] == "aligned" and run_json["unet"]["in_channels"] == 4

    # without --resume an existing run is refused with the bad-input exit code; with it, training continues
    assert main([*args, "--steps", "4"]) == BadInputError.exit_code
    assert main([*args, "--steps", "4", "--resume"]) == 0
    assert [r["step"] for r in read_log(run)] == [1, 2, 3, 4]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["resumed_from"] == 2


def test_stage_flags_are_recorded_and_reach_the_bundle(phantom_dir: Path, tmp_path: Path) -> None:
    """--prediction-type, --clip-sample, --conditioning and --min-snr-gamma: recorded in run.json and,
    through export, in the manifest every sampler reads."""
    runs = {}
    flags = ["--prediction-type", "epsilon", "--clip-sample", "no", "--conditioning", "paper", "--min-snr-gamma", "5"]
    for stage in ("stage1", "stage2", "stage3"):
        runs[stage] = tmp_path / stage
        args = ["train", stage, "--data", str(phantom_dir), "--out", str(runs[stage]), "--steps", "1", *TINY, *GEOM]
        assert main([*args, *flags, "--preset", "cpu"]) == 0
    meta = json.loads((runs["stage3"] / "run.json").read_text())
    assert meta["config"]["min_snr_gamma"] == 5.0 and meta["unet"]["in_channels"] == 3
    assert meta["meta"]["schedule"]["prediction_type"] == "epsilon" and not meta["meta"]["schedule"]["clip_sample"]
    bundle = tmp_path / "bundle"
    export = ["train", "export", "mambo", "--out", str(bundle)]
    assert main([*export, *(x for i, s in enumerate(runs) for x in (f"--stage{i + 1}", str(runs[s])))]) == 0
    b = load_bundle(bundle)
    assert b.schedule["prediction_type"] == "epsilon" and b.schedule["clip_sample"] is False
    assert MamboGeometry.from_dict(b.geometry).conditioning == "paper"
    assert MamboPipeline.from_bundle(bundle)(options=SamplingOptions(seeds=(0,), steps=2)).image.shape == (96, 72)


def test_the_demo_plans_share_one_recipe() -> None:
    from training.demo import PLANS

    for plan in PLANS.values():
        assert plan.schedule["prediction_type"] == "v_prediction" and plan.schedule["clip_sample"] is True
        assert plan.geometry.conditioning == "aligned" and plan.preset == "cpu"
        assert plan.ema_decay("stage1") == pytest.approx(0.5 ** (1 / (0.1 * plan.steps["stage1"])))
    assert PLANS["gpu"].batch_size > PLANS["cpu"].batch_size


def test_dualview_training_pairs_dicom_views_and_exports(phantom_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "dv"
    args = ["train", "dualview", "--data", str(phantom_dir), "--out", str(run), "--size", "16", "--steps", "2"]
    assert main([*args, *TINY, "--mixed-precision", "no", "--sample-every", "0"]) == 0
    assert json.loads((run / "run.json").read_text())["data"]["pairs"] == 2
    bundle = tmp_path / "bundle"
    assert main(["train", "export", "dualview", "--run", str(run), "--out", str(bundle), "--dtype", "float16"]) == 0
    assert load_bundle(bundle).name == "bundle"
    assert main(["train", "export", "mambo", "--stage1", str(run), "--out", str(tmp_path / "x")]) == 3


def test_missing_data_is_a_bad_input(tmp_path: Path) -> None:
    code = main(["train", "stage1", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), *TINY])
    assert code == BadInputError.exit_code


@pytest.mark.slow
def test_demo_command_builds_both_bundles_marked_synthetic(tmp_path: Path) -> None:
    """The demo path at toy scale: phantoms -> 4 networks -> 2 verified bundles that generate."""
    plan = DemoPlan(
        cases=2,
        size=(96, 72),
        geometry=MamboGeometry(s=16, k=3, overlap=4, conditioning="aligned"),
        dualview_size=16,
        steps=dict.fromkeys(("stage1", "stage2", "stage3", "dualview"), 2),
        warmup_steps=1,
        batch_size=2,
    )
    report = run_demo(tmp_path / "bundles", seed=0, plan=plan, work_dir=tmp_path / "work", progress=False)
    assert set(report["losses"]) == {"stage1", "stage2", "stage3", "dualview"}
    for name in ("demo-mambo", "demo-dualview"):
        b = load_bundle(tmp_path / "bundles" / name)
        assert (
            b.manifest["description"] == DEMO_NOTE and "not for research or clinical use" in b.manifest["intended_use"]
        )
        assert b.manifest["training"]["stored_dtype"] == "float16"
        assert "phantoms" in b.manifest["training"]["data"]["images"]["kind"]
        assert b.manifest["extra"]["demo"]["command"].startswith("mammogen train demo")
        assert b.schedule["prediction_type"] == "v_prediction" and b.schedule["clip_sample"] is True
    one = SamplingOptions(seeds=(0,), steps=2)
    result = MamboPipeline.from_bundle(tmp_path / "bundles" / "demo-mambo")(options=one)
    assert result.image.shape == (96, 72) and np.isfinite(result.image).all()
    pairs = DualViewPipeline.from_bundle(tmp_path / "bundles" / "demo-dualview")(one)
    assert pairs.cc.shape == (1, 16, 16)


def test_demo_phantoms_are_healthy_preprocessed_and_paired() -> None:
    images = phantom_images(2, seed=5, size=(96, 72))
    assert len(images) == 4
    for i in range(4):
        item = images.get(i)
        assert item.image.dtype == np.float32 and item.image.max() == pytest.approx(1.0)
        assert (item.image[~item.mask] == 0).all()
        cols = item.mask.sum(axis=0)
        assert cols[:8].sum() > cols[-8:].sum()  # chest wall on the left after preprocessing
    assert {images.get(i).meta["view"] for i in range(4)} == {"CC", "MLO"}
