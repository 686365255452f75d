"""``mammogen evaluate generation`` end to end on PNG folders (pixel features: no weights needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from app.cli.evaluate.generation import list_images, load_folder
from app.cli.main import main
from models.errors import BadInputError
from models.geometry import TileGrid
from models.imaging.files import write_png16
from models.metrics.lpips import alexnet_features
from tests.metrics_images import phantom

SHAPE = (288, 256)
TILE, OVERLAP = 64, 16


def _stitched(seed: int) -> np.ndarray:
    """A phantom re-assembled tile by tile with per-tile brightness offsets (a hard-overwrite stitch)."""
    base = phantom(seed, SHAPE)
    rng = np.random.default_rng(seed)
    out = base.copy()
    grid = TileGrid.cover(*SHAPE, TILE, OVERLAP)
    for i, j in grid.raster():
        sl = grid.box(i, j).slices
        out[sl] = np.where(base[sl] > 0, np.clip(base[sl] + rng.normal(0, 0.03), 0, 1), 0)
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    real = [phantom(s, SHAPE) for s in range(8)]
    for i, img in enumerate(real):
        write_png16(root / "real" / f"case{i}" / "R_CC.png", img)
    write_png16(root / "real" / "case0" / "R_CC_lesions.png", np.zeros(SHAPE))  # a mask: must be skipped
    for i in range(7):
        write_png16(root / "synthetic" / f"gen{i}.png", _stitched(100 + i))
    write_png16(root / "synthetic" / "gen_copy.png", real[2])  # planted training image
    for i in range(30):
        write_png16(root / "heldout" / f"h{i}.png", phantom(1000 + i, SHAPE))
    torch.manual_seed(0)  # a random AlexNet in torchvision's layout stands in for the ImageNet weights
    torch.save({f"features.{k}": v for k, v in alexnet_features().state_dict().items()}, root / "alexnet.pth")
    return root


@pytest.mark.slow
def test_report_has_labelled_fid_kid_patches_seams_and_flags_the_planted_copy(folders, capsys):
    out = folders / "report.json"
    args = ["evaluate", "generation", "--real", str(folders / "real"), "--synthetic", str(folders / "synthetic")]
    args += ["--train", str(folders / "real"), "--heldout", str(folders / "heldout"), "--out", str(out)]
    args += ["--extractor", "pixels", "--patches", "2", "--patch-size", "64", "--kid-subsets", "5"]
    args += ["--tile", str(TILE), "--overlap", str(OVERLAP), "--whole-size", "128"]
    args += ["--lpips-backbone", str(folders / "alexnet.pth")]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["real"]["n"] == 8 and report["synthetic"]["n"] == 8
    whole = report["whole_image"]
    assert whole["comparable_with_literature"] is False and "not comparable" in " ".join(whole["notes"])
    assert whole["extractor"].startswith("downsampled pixels") and whole["fid"] > 0
    assert whole["size"] == "128x128"
    assert report["patches"]["n_real"] == report["patches"]["n_synthetic"] == 16
    seams = report["seams"]
    assert seams["synthetic"]["patch"]["mean_ratio"] > 2 * seams["real_baseline"]["patch"]["mean_ratio"]
    assert seams["synthetic"]["patch_band8"]["mean_ratio"] > 1.5 * seams["real_baseline"]["patch_band8"]["mean_ratio"]
    assert report["lpips"]["pairs"] == 16 and report["lpips"]["mean"] > 0 and report["lpips"]["backbone_sha256"]
    mem = report["memorization"]
    assert "gen_copy.png" in mem["flagged"]
    copy_pair = next(p for p in mem["pairs"] if p["generated"] == "gen_copy.png")
    assert copy_pair["correlation"]["nearest_train"] == "case2/R_CC.png"
    assert (folders / "report_memorization.png").is_file()
    table = capsys.readouterr().out
    assert "FID" in table and "not comparable" in table and "memorization" in table


def test_fewer_than_two_images_is_bad_input(folders, tmp_path, capsys):
    write_png16(tmp_path / "one" / "a.png", phantom(0, SHAPE))
    args = ["evaluate", "generation", "--real", str(folders / "real"), "--synthetic", str(tmp_path / "one")]
    args += ["--extractor", "pixels", "--out", str(tmp_path / "r.json")]
    assert main(args) == BadInputError.exit_code
    assert "at least 2" in capsys.readouterr().err


def test_missing_inception_weights_exit_with_a_clear_unavailable_message(folders, capsys):
    args = ["evaluate", "generation", "--real", str(folders / "real"), "--synthetic", str(folders / "synthetic")]
    args += ["--inception", str(folders / "nope.pt"), "--out", str(folders / "r.json")]
    assert main(args) == BadInputError.exit_code
    assert "unavailable" in capsys.readouterr().err


def test_image_listing_skips_masks_and_counts_a_view_written_as_png_and_dicom_once(tmp_path):
    write_png16(tmp_path / "a" / "L_CC.png", np.zeros((8, 8)))
    (tmp_path / "a" / "L_CC.dcm").write_bytes(b"x")
    write_png16(tmp_path / "a" / "L_CC_lesions.png", np.zeros((8, 8)))
    write_png16(tmp_path / "a" / "L_CC_healthy.png", np.zeros((8, 8)))
    (tmp_path / "manifest.json").write_text("{}")
    assert [p.name for p in list_images(tmp_path)] == ["L_CC.png"]


def test_unreadable_files_are_listed_and_images_are_read_lazily(tmp_path):
    write_png16(tmp_path / "good.png", np.full((16, 12), 0.5))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    images, names, skipped = load_folder(tmp_path, 0, "real")
    assert names == ["good.png"] and len(skipped) == 1 and skipped[0].startswith("broken.png")
    assert images[0].shape == (16, 12) and images[-1] is images[0]  # cached, decoded on demand
    assert len(images[0:5]) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no readable images"):
        load_folder(tmp_path / "empty", 0, "real")
