"""Memorization check: a training image planted in the generated set is flagged; honest samples are not."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from models.errors import BadInputError
from models.imaging.files import read_png
from models.metrics.features import PixelExtractor
from models.metrics.memorization import check_memorization, downsample_masked, masked_pearson, write_montage
from tests.metrics_images import phantom_set

SHAPE = (96, 80)


@pytest.fixture(scope="module")
def sets():
    # Shape dominates the correlation of phantoms and its tail is heavy, so the "closer than every held-out
    # image" rule needs a large held-out set: each honest image is falsely flagged with probability 1/(n+1).
    train = phantom_set(range(0, 16), SHAPE)
    heldout = phantom_set(range(1000, 1100), SHAPE)
    generated = phantom_set(range(2000, 2006), SHAPE)
    return train, heldout, generated


def test_masked_pearson_is_one_for_a_copy_even_mirrored_rescaled_or_with_noisy_background(sets):
    train, _, _ = sets
    img = train[0]
    noisy = np.clip(img + np.random.default_rng(1).normal(0, 0.01, SHAPE), 0, 1)  # grows the mask at the rim
    stack = downsample_masked([img, img[:, ::-1].copy(), 0.5 * img + 0.1, noisy, train[1]])
    r = masked_pearson(stack, stack)
    assert r[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert r[0, 2] == pytest.approx(1.0, abs=1e-3)
    assert r[0, 3] > 0.98
    assert r[0, 4] < 0.95
    assert np.allclose(r, r.T)


def test_masked_pearson_matches_numpy_corrcoef_on_the_mask_intersection(sets):
    train, _, _ = sets
    stack = downsample_masked(train[:2], size=32)
    both = (stack.masks[0] > 0) & (stack.masks[1] > 0)
    expected = np.corrcoef(stack.values[0][both], stack.values[1][both])[0, 1]
    assert masked_pearson(stack, stack)[0, 1] == pytest.approx(expected, rel=1e-9)


def test_an_exact_training_copy_planted_among_generated_images_is_the_only_one_flagged(sets):
    train, heldout, generated = sets
    planted = [*generated, train[3].copy()]
    report = check_memorization(planted, train, heldout)
    corr = report.criteria["correlation"]
    assert np.nonzero(report.flagged)[0].tolist() == [len(planted) - 1]
    assert int(corr.generated.index[-1]) == 3
    assert corr.generated.similarity[-1] == pytest.approx(1.0, abs=1e-6)
    assert corr.threshold_rule == "max held-out" and corr.threshold < 0.999


def test_a_noisy_mirrored_copy_is_flagged_too(sets):
    train, heldout, generated = sets
    rng = np.random.default_rng(0)
    near_copy = np.clip(train[5][:, ::-1] + rng.normal(0, 0.01, SHAPE), 0, 1).astype(np.float32)
    report = check_memorization([*generated, near_copy], train, heldout)
    assert report.flagged[-1] and not report.flagged[:-1].any()


def test_feature_cosine_criterion_flags_the_copy_and_reports_it_separately(sets):
    train, heldout, generated = sets
    planted = [*generated, train[7].copy()]
    ext = PixelExtractor(size=16)
    report = check_memorization(
        planted,
        train,
        heldout,
        generated_features=ext.extract(planted),
        train_features=ext.extract(train),
        heldout_features=ext.extract(heldout),
    )
    cos = report.criteria["feature_cosine"]
    assert cos.flagged[-1] and int(cos.generated.index[-1]) == 7
    summary = report.to_dict()
    assert summary["flagged"] == [len(planted) - 1]
    assert summary["pairs"][-1]["feature_cosine"]["flagged"] is True


def test_mann_whitney_sees_a_set_of_copies_but_not_an_honest_set(sets):
    train, heldout, generated = sets
    honest = check_memorization(generated, train, heldout).criteria["correlation"].mann_whitney
    copies = check_memorization([*generated, *train[:8]], train, heldout).criteria["correlation"].mann_whitney
    assert honest is not None and copies is not None
    assert honest["p_value"] > 0.05
    assert copies["p_value"] < 0.01


def test_without_held_out_images_the_fixed_threshold_is_labelled_uncalibrated(sets):
    train, _, generated = sets
    report = check_memorization([*generated, train[0]], train)
    corr = report.criteria["correlation"]
    assert "uncalibrated" in corr.threshold_rule and corr.mann_whitney is None
    assert corr.flagged[-1]


def test_empty_sets_are_bad_input(sets):
    with pytest.raises(BadInputError):
        check_memorization([], sets[0])


def test_montage_shows_the_top_pairs(sets, tmp_path):
    train, heldout, generated = sets
    planted = [*generated, train[3].copy()]
    report = check_memorization(planted, train, heldout, generated_names=[f"g{i}" for i in range(len(planted))])
    path = write_montage(tmp_path / "pairs.png", planted, train, report, top_k=3, tile=80)
    img = read_png(path)
    assert img.shape == (4 + 3 * (80 + 26 + 4), 2 * 80 + 12)
    # The flagged copy comes first, framed in red (pure red pixels exist only in the frame and label).
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    red = (rgb[..., 0] == 255) & (rgb[..., 1] == 0) & (rgb[..., 2] == 0)
    assert red[: 4 + 80 + 26 + 4].any() and not red[4 + 80 + 26 + 4 :].any()
