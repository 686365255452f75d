"""One preprocessing chain: serving prepares a file exactly as training did, with the bundle's recorded config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.anomaly import AnomalyPipeline
from models.anomaly_input import prepare
from models.bundle import load_bundle, save_bundle
from models.errors import BadInputError
from models.geometry import MamboGeometry
from models.imaging.files import write_png16
from models.imaging.readers import read_image
from models.intensity import DEFAULT_INTENSITY, IntensityMapping
from models.mambo import MamboPipeline
from models.options import SamplingOptions
from models.preprocess import DEFAULT_PREPROCESS, PreprocessConfig, preprocess_image
from models.requests import AnomalyConfig, SuperResConfig
from models.schedulers import NOISE_SCHEDULE
from models.superres import SuperResolutionPipeline
from models.unet import build_unet
from tests.imaging_support import phantom_dicom
from tests.pipeline_support import tiny_mambo
from training.cache import PreprocessCache
from training.phantoms import make_phantom_case

GEOMETRY = MamboGeometry(s=32, k=2, overlap=8)
ONE_STEP = SamplingOptions(steps=1)
#: Every knob away from its default, so a serving path that ignored the config would differ.
CUSTOM = PreprocessConfig(
    intensity=IntensityMapping(raw_window="percentile", lo_percentile=2.0, hi_percentile=98.0),
    otsu_factor=0.3,
    erode_px=2,
    crop_to_breast=True,
    crop_margin_px=3,
)


@pytest.fixture(scope="module")
def right_case():
    return make_phantom_case(31, (96, 72), laterality="R")


@pytest.fixture(scope="module")
def files(tmp_path_factory, right_case) -> dict[str, Path]:
    """The same right breast as an MG DICOM (chest wall right) and as an inverted ("negative") 16-bit PNG."""
    root = tmp_path_factory.mktemp("inputs")
    dicom = phantom_dicom(root / "r.dcm", right_case.cc.image, laterality="R", view="CC", bits_stored=14)
    return {"dicom": dicom, "negative_png": write_png16(root / "neg.png", 1.0 - right_case.cc.image)}


def _bundle(path: Path, preprocess: PreprocessConfig | None) -> Path:
    torch.manual_seed(0)
    nets = {"global": build_unet("tiny", 1, 1, 32), "local": build_unet("tiny", 3, 1, 32)}
    nets["patch"] = build_unet("tiny", 3, 1, 32)
    return save_bundle(
        path,
        kind="mambo",
        name="tiny-random",
        version="0",
        networks=nets,
        geometry=GEOMETRY.to_dict(),
        intensity=(preprocess or DEFAULT_PREPROCESS).intensity,
        preprocess=preprocess,
        schedule=NOISE_SCHEDULE,
        training={"data": "none: random weights"},
        random_weights=True,
    )


@pytest.fixture(scope="module")
def custom_bundle(tmp_path_factory) -> Path:
    return _bundle(tmp_path_factory.mktemp("b") / "custom", CUSTOM)


@pytest.mark.parametrize("kind", ["dicom", "negative_png"])
@pytest.mark.parametrize("config", [DEFAULT_PREPROCESS, CUSTOM], ids=["default", "custom"])
def test_a_file_preprocessed_for_training_and_for_serving_gives_identical_arrays(tmp_path, files, kind, config):
    trained = PreprocessCache(tmp_path / "cache", config).get(files[kind])  # what the training loop reads
    image, info = read_image(files[kind])  # what a worker decodes from the upload
    served = prepare(image, GEOMETRY, config, info=info)  # anomaly maps
    assert served.pre.orientation.flipped and served.pre.inverted == (kind == "negative_png")
    np.testing.assert_array_equal(served.canonical, np.asarray(trained.image))
    np.testing.assert_array_equal(served.breast, np.asarray(trained.mask))
    # super-resolution: at scale k the input itself is the mid image, resized to its own size
    sr = SuperResolutionPipeline(tiny_mambo(GEOMETRY, preprocess=config))
    result = sr(image, SuperResConfig(scale=GEOMETRY.k, stand_in="mid", options=ONE_STEP), info=info)
    np.testing.assert_allclose(result.mid_image, np.asarray(trained.image), atol=1e-6)


def test_the_bundle_records_its_preprocessing_and_every_serving_pipeline_applies_it(custom_bundle, right_case):
    bundle = load_bundle(custom_bundle)
    assert bundle.manifest["preprocess"] == CUSTOM.to_dict() and bundle.preprocess == CUSTOM
    assert MamboPipeline.from_bundle(bundle).preprocess == CUSTOM
    assert SuperResolutionPipeline.from_bundle(bundle).mambo.preprocess == CUSTOM
    pipe = AnomalyPipeline.from_bundle(bundle)
    assert pipe.preprocess == CUSTOM
    image = right_case.cc.image
    result = pipe(image, AnomalyConfig(lam=5, options=SamplingOptions("ddim", 1000, seeds=(0,))))
    expected = preprocess_image(image, None, CUSTOM)
    assert expected.crop_box is not None  # the custom chain crops: the map is placed back into the input frame
    np.testing.assert_array_equal(result.preprocessed, expected.to_source(expected.image))
    default = preprocess_image(image, None, DEFAULT_PREPROCESS)
    assert not np.allclose(result.preprocessed, default.to_source(default.image), atol=1e-3)


def test_a_bundle_refuses_what_its_training_chain_refused(tmp_path, right_case):
    strict = _bundle(tmp_path / "strict", PreprocessConfig(min_breast_fraction=0.9))
    with pytest.raises(BadInputError, match="no breast found"):
        AnomalyPipeline.from_bundle(strict)(right_case.cc.image, AnomalyConfig(lam=5, options=ONE_STEP))


def test_bundles_written_before_the_record_load_with_the_default_chain(tmp_path):
    path = _bundle(tmp_path / "old", None)
    manifest_path = path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest.pop("preprocess") == DEFAULT_PREPROCESS.to_dict()
    manifest_path.write_text(json.dumps(manifest))
    bundle = load_bundle(path)
    assert bundle.preprocess == DEFAULT_PREPROCESS and bundle.summary()["preprocess"] == DEFAULT_PREPROCESS.to_dict()
    assert AnomalyPipeline.from_bundle(bundle).preprocess == DEFAULT_PREPROCESS


def test_a_manifest_whose_preprocessing_and_intensity_disagree_is_refused(tmp_path):
    from models.errors import BundleIntegrityError

    path = _bundle(tmp_path / "bad", CUSTOM)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["intensity"] = DEFAULT_INTENSITY.to_dict()
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleIntegrityError, match="preprocessing"):
        load_bundle(path)


def test_superres_gives_a_negative_back_as_a_negative(files, right_case):
    image, info = read_image(files["negative_png"])
    sr = SuperResolutionPipeline(tiny_mambo(GEOMETRY))
    result = sr(image, SuperResConfig(scale=2, options=ONE_STEP), info=info)
    assert result.stats["inverted"] is True
    outside = ~np.repeat(np.repeat(right_case.cc.breast_mask, 2, axis=0), 2, axis=1)
    assert result.image[outside].mean() > 0.95  # the background stays white, as in the input
