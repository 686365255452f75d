"""Training the lesion network: label dropout, phantom windows, real images with ROI label masks.

Tiny networks and a few steps: what is specified is the data path and the bundle contract, not quality
(docs/LESIONS.md measures that on the trained demo network).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.cli.main import main
from models.bundle import create_random_bundle, load_bundle
from models.errors import BadInputError
from models.imaging.files import write_png16
from models.lesion_insertion import LesionInserter
from models.lesion_spec import LESION_KINDS, LesionSpec
from models.options import SamplingOptions
from models.unet import build_unet
from training.lesions import LesionSource, lesion_examples
from training.loop import diffusion_objective, step_generator
from training.phantoms import make_phantom_case


def test_phantom_windows_hold_the_lesion_layer_over_the_healthy_twin():
    examples = lesion_examples(2, 100_000, (256, 192), 32, (1, 3))
    lesions = [e for e in examples if e.mask.any()]
    assert lesions and any(not e.mask.any() for e in examples)
    for e in lesions:
        assert e.target.shape == e.healthy.shape == e.mask.shape == (32, 32)
        # the target is the lesion layer (image - twin): bright where the mask is, about 0 far from it
        assert e.target[e.mask].mean() > 0.01
        far = np.ones_like(e.mask)
        far[max(0, np.nonzero(e.mask)[0].min() - 12) : np.nonzero(e.mask)[0].max() + 13] = False
        assert np.abs(e.target[far]).max(initial=0.0) < 0.02
    assert {e.label for e in examples} <= set(range(len(LESION_KINDS) + 1))
    x, labels = LesionSource(examples).batch(step_generator(0, 0), 8)
    assert x.shape == (8, 3, 32, 32) and labels.shape == (8,) and x.min() >= -1 and x.max() <= 1


def test_label_dropout_swaps_labels_for_the_null_class_reproducibly():
    torch.manual_seed(0)
    unet = build_unet("tiny", 3, classes=3)
    x = torch.rand(16, 3, 32, 32) * 2 - 1
    labels = torch.zeros(16, dtype=torch.long)
    seen = []

    def spy(self, sample, timestep, class_labels=None, **kw):
        seen.append(class_labels.clone())
        return original(self, sample, timestep, class_labels=class_labels, **kw)

    original = type(unet).forward
    type(unet).forward = spy
    try:
        objective = diffusion_objective(1, None, 0.0, label_dropout=0.5, null_label=3)
        a = objective(unet, x, step_generator(1, 2), labels)
        b = objective(unet, x, step_generator(1, 2), labels)
    finally:
        type(unet).forward = original
    assert torch.equal(seen[0], seen[1]) and torch.equal(a, b)
    assert set(seen[0].tolist()) == {0, 3}
    with pytest.raises(ValueError, match="null label"):
        diffusion_objective(1, None, 0.0, label_dropout=0.1)


def _labelled_folder(root: Path) -> Path:
    """Lesion phantom views as 16-bit PNGs with their ``_mask.png`` ROI labels (no healthy twin given)."""
    root.mkdir()
    for seed in (100_001, 100_002):
        for view in make_phantom_case(seed, (256, 192), lesions=True).views:
            stem = root / f"case{seed}-{view.view}"
            write_png16(stem.with_suffix(".png"), view.image)
            write_png16(Path(f"{stem}_mask.png"), view.mass_mask.astype(np.float32))
    return root


def test_train_lesions_on_real_style_roi_masks_adds_a_masked_lesion_network(tmp_path):
    data = _labelled_folder(tmp_path / "data")
    bundle = create_random_bundle(tmp_path / "bundle", preset="tiny", conditioning="aligned")
    args = ["train", "lesions", "--bundle", str(bundle), "--work", str(tmp_path / "run"), "--data", str(data)]
    assert main([*args, "--kind", "mass", "--steps", "3", "--no-progress", "--threads", "1"]) == 0
    b = load_bundle(bundle)
    assert b.classes("lesion") == ("mass",) and b.network_info("lesion")["conditioning"] == "masked"
    assert b.manifest["training"]["networks"]["lesion"]["data"]["kind"] == "images with ROI label masks"
    inserter = LesionInserter.from_bundle(bundle)
    view = make_phantom_case(7, (256, 192), laterality="L").cc
    ys, xs = np.nonzero(view.breast_mask)
    centre = (float(np.median(ys)), float(np.median(xs)))
    result = inserter(view.image, [LesionSpec("mass", centre, 10)], SamplingOptions(steps=2, seeds=(1,)))
    assert np.array_equal(result.image[~result.edited], view.image[~result.edited])
    with pytest.raises(BadInputError, match="unknown kind 'calcifications'"):
        inserter(view.image, [LesionSpec("calcifications", centre, 10)], SamplingOptions(steps=2, seeds=(1,)))


def test_train_lesions_refuses_a_folder_without_label_masks(tmp_path):
    (tmp_path / "data").mkdir()
    write_png16(tmp_path / "data" / "a.png", make_phantom_case(1, (64, 48)).cc.image)
    bundle = create_random_bundle(tmp_path / "bundle", preset="tiny")
    args = [
        "train",
        "lesions",
        "--bundle",
        str(bundle),
        "--work",
        str(tmp_path / "run"),
        "--data",
        str(tmp_path / "data"),
    ]
    assert main([*args, "--steps", "1", "--no-progress"]) == BadInputError.exit_code


def test_train_lesions_reads_the_label_mask_column_of_an_index(tmp_path):
    from app.cli.train import labelled_pairs

    data = _labelled_folder(tmp_path / "data")
    assert main(["ingest", str(data), "--out", str(tmp_path / "index.csv")]) == 0
    from_index = labelled_pairs(tmp_path / "index.csv")
    assert from_index == labelled_pairs(data) and len(from_index) == 4
    assert all(m.name.endswith("_mask.png") for _, m in from_index)
