"""Export: finished runs -> a verified bundle that loads and generates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.bundle import load_bundle
from models.dualview import DualViewPipeline
from models.errors import BadInputError
from models.geometry import MamboGeometry
from models.mambo import MamboPipeline
from models.options import SamplingOptions
from tests.test_datasets import breast
from training.datasets import InMemoryImages
from training.export import export_bundle, load_run_unet, read_run
from training.loop import TrainConfig, train_stage

GEOM = MamboGeometry(s=16, k=3, overlap=4)
CFG = TrainConfig(steps=2, batch_size=2, warmup_steps=1, log_every=1, mixed_precision="no")


def pairs() -> InMemoryImages:
    items = []
    for p in range(2):
        for view in ("CC", "MLO"):
            items.append(breast(seed=2 * p + len(view), patient_id=f"p{p}", study_uid="s", laterality="L", view=view))
    return InMemoryImages(items, {"kind": "test-breasts"})


@pytest.fixture(scope="module")
def mambo_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for stage, net in (("stage1", "global"), ("stage2", "local"), ("stage3", "patch")):
        train_stage(pairs(), stage, root / net, config=CFG, geometry=GEOM, progress=False, preview_steps=0)
        runs[net] = root / net
    return runs


def test_mambo_export_loads_verified_with_training_record(mambo_runs: dict[str, Path], tmp_path: Path) -> None:
    out = export_bundle(
        "mambo", mambo_runs, tmp_path / "b", name="t", version="0.1", dtype="float16", description="test phantoms"
    )
    bundle = load_bundle(out)  # verifies every sha256
    m = bundle.manifest
    assert m["kind"] == "mambo" and m["random_weights"] is False and m["description"] == "test phantoms"
    assert MamboGeometry.from_dict(m["geometry"]) == GEOM and m["geometry"]["chest_wall"] == "left"
    assert m["training"]["weights"] == "ema" and m["training"]["stored_dtype"] == "float16"
    for net in ("global", "local", "patch"):
        record = m["training"]["networks"][net]
        assert record["steps"] == 2 and np.isfinite(record["final_loss"]) and record["config"]["batch_size"] == 2
        assert record["data"]["stage"] == net and record["data"]["images"]["images"] == 4
        unet = bundle.load_network(net)
        assert next(unet.parameters()).dtype == torch.float32  # stored fp16, served as asked
        x = torch.zeros(1, unet.config.in_channels, 16, 16)
        assert torch.isfinite(unet(x, torch.tensor([500])).sample).all()
    # ...and the MAMBO pipeline generates from it at the training images' native size
    result = MamboPipeline.from_bundle(out)(options=SamplingOptions(seeds=(0,), steps=2))
    assert result.image.shape == (96, 72) and np.isfinite(result.image).all()
    # the bundle holds the EMA weights of each run, rounded to fp16
    ema = read_run(mambo_runs["patch"])
    assert ema["summary"]["steps"] == 2
    stored = bundle.load_network("patch")
    src = load_run_unet(mambo_runs["patch"], "ema")
    for a, b in zip(src.parameters(), stored.parameters(), strict=True):
        assert torch.equal(a.half().float(), b)


def test_export_refuses_runs_with_different_geometry(mambo_runs: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "patch"
    geom = MamboGeometry(s=16, k=2, overlap=4)
    train_stage(pairs(), "stage3", other, config=CFG, geometry=geom, progress=False, preview_steps=0)
    with pytest.raises(BadInputError, match="geometry"):
        export_bundle("mambo", {**mambo_runs, "patch": other}, tmp_path / "b", name="t", version="1")
    with pytest.raises(BadInputError, match="needs runs"):
        export_bundle("mambo", {"global": mambo_runs["global"]}, tmp_path / "b", name="t", version="1")


def test_the_images_preprocessing_is_recorded_per_run_and_carried_into_the_bundle(
    mambo_runs: dict[str, Path], tmp_path: Path
) -> None:
    from models.intensity import IntensityMapping
    from models.preprocess import DEFAULT_PREPROCESS, PreprocessConfig

    assert read_run(mambo_runs["global"])["meta"]["preprocess"] == DEFAULT_PREPROCESS.to_dict()  # set says nothing
    custom = PreprocessConfig(intensity=IntensityMapping(raw_window="percentile"), crop_to_breast=True)
    images = InMemoryImages(pairs().items, {"kind": "test-breasts", "preprocess": custom.to_dict()})
    runs = {}
    for stage, net in (("stage1", "global"), ("stage2", "local"), ("stage3", "patch")):
        train_stage(images, stage, tmp_path / net, config=CFG, geometry=GEOM, progress=False, preview_steps=0)
        runs[net] = tmp_path / net
    meta = read_run(runs["patch"])["meta"]
    assert meta["preprocess"] == custom.to_dict() and meta["intensity"] == custom.intensity.to_dict()
    bundle = load_bundle(export_bundle("mambo", runs, tmp_path / "b", name="t", version="1"))
    assert bundle.preprocess == custom and bundle.intensity == custom.intensity
    uncropped = PreprocessConfig(intensity=custom.intensity)  # same intensity mapping, another chain
    images = InMemoryImages(pairs().items, {"kind": "test-breasts", "preprocess": uncropped.to_dict()})
    train_stage(images, "stage3", tmp_path / "other", config=CFG, geometry=GEOM, progress=False, preview_steps=0)
    with pytest.raises(BadInputError, match="disagree on preprocess"):
        export_bundle("mambo", {**runs, "patch": tmp_path / "other"}, tmp_path / "c", name="t", version="1")


def test_unfinished_run_is_not_exported(tmp_path: Path) -> None:
    train_stage(pairs(), "stage1", tmp_path / "r", config=CFG, geometry=GEOM, progress=False, stop_after=1)
    with pytest.raises(BadInputError, match="not finished"):
        read_run(tmp_path / "r")


def test_dualview_export_generates_pairs(tmp_path: Path) -> None:
    run = tmp_path / "dv"
    train_stage(pairs(), "dualview", run, config=CFG, geometry=GEOM, dualview_size=16, progress=False, preview_steps=0)
    out = export_bundle("dualview", {"dualview": run}, tmp_path / "b", name="dv", version="0.1")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["geometry"] == {"size": 16, "chest_wall": "left"}
    result = DualViewPipeline.from_bundle(out)(SamplingOptions(seeds=(0, 1), steps=2))
    assert result.cc.shape == result.mlo.shape == (2, 16, 16)
    assert np.isfinite(result.cc).all()
