"""Bundles round-trip their networks and manifest, and refuse anything altered, unknown or missing."""

import json

import pytest
import torch

from models.bundle import load_bundle, save_bundle
from models.errors import BundleIntegrityError, BundleNotFoundError
from models.intensity import DEFAULT_INTENSITY
from models.schedulers import NOISE_SCHEDULE
from models.unet import build_unet


def _save(path, kind="mambo", **kw):
    torch.manual_seed(0)
    nets = (
        {"global": build_unet("tiny", 1), "local": build_unet("tiny", 3), "patch": build_unet("tiny", 3)}
        if kind == "mambo"
        else {"dualview": build_unet("tiny", 3, 3)}
    )
    save_bundle(
        path,
        kind=kind,
        name="test",
        version="0.0.1",
        networks=nets,
        geometry={"s": 32, "k": 3, "overlap": 8},
        intensity=DEFAULT_INTENSITY,
        schedule=NOISE_SCHEDULE,
        training={"data": "none (random weights)"},
        random_weights=True,
        **kw,
    )
    return nets


def test_bundle_round_trip_gives_identical_networks_and_manifest(tmp_path):
    nets = _save(tmp_path / "b", description="unit test")
    b = load_bundle(tmp_path / "b")
    assert (b.kind, b.name, b.version, b.random_weights, b.verified) == ("mambo", "test", "0.0.1", True, True)
    assert b.geometry == {"s": 32, "k": 3, "overlap": 8}
    assert b.intensity == DEFAULT_INTENSITY
    assert b.schedule == NOISE_SCHEDULE
    for name, net in nets.items():
        loaded = b.load_network(name).state_dict()
        assert all(torch.equal(v, loaded[k]) for k, v in net.state_dict().items())
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["format"] == "mammogen-bundle" and manifest["format_version"] == 1
    assert "global/diffusion_pytorch_model.safetensors" in manifest["files"]
    summary = b.summary()
    assert summary["networks"]["global"]["in_channels"] == 1 and summary["bytes"] > 0


def test_dualview_bundle_holds_one_three_channel_network(tmp_path):
    _save(tmp_path / "dv", kind="dualview")
    net = load_bundle(tmp_path / "dv").load_network("dualview")
    assert (net.config.in_channels, net.config.out_channels) == (3, 3)


def test_bundle_with_a_changed_weight_file_is_refused_naming_the_file(tmp_path):
    _save(tmp_path / "b")
    f = tmp_path / "b" / "patch" / "diffusion_pytorch_model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=r"patch/diffusion_pytorch_model\.safetensors"):
        load_bundle(tmp_path / "b")
    load_bundle(tmp_path / "b", verify=False)  # reading the manifest alone still works


def test_bundle_with_a_missing_file_is_refused(tmp_path):
    _save(tmp_path / "b")
    (tmp_path / "b" / "global" / "config.json").unlink()
    with pytest.raises(BundleIntegrityError, match=r"global/config\.json"):
        load_bundle(tmp_path / "b")


def test_missing_bundle_says_how_to_make_one(tmp_path):
    with pytest.raises(BundleNotFoundError, match="mammogen bundle create"):
        load_bundle(tmp_path / "nope")


@pytest.mark.parametrize(("key", "value", "match"), [("format_version", 99, "format_version"), ("kind", "gan", "kind")])
def test_unknown_format_version_or_kind_is_refused(tmp_path, key, value, match):
    _save(tmp_path / "b")
    mf = tmp_path / "b" / "manifest.json"
    m = json.loads(mf.read_text())
    m[key] = value
    mf.write_text(json.dumps(m))
    with pytest.raises(BundleIntegrityError, match=match):
        load_bundle(tmp_path / "b")


def test_saving_refuses_wrong_networks_and_non_empty_folders(tmp_path):
    with pytest.raises(ValueError, match="holds networks"):
        save_bundle(
            tmp_path / "x",
            kind="mambo",
            name="n",
            version="1",
            networks={"global": build_unet("tiny", 1)},
            geometry={},
            intensity=DEFAULT_INTENSITY,
            schedule=NOISE_SCHEDULE,
            training={},
            random_weights=True,
        )
    _save(tmp_path / "b")
    with pytest.raises(FileExistsError):
        _save(tmp_path / "b")
    _save(tmp_path / "b", overwrite=True)
    assert load_bundle(tmp_path / "b").verified
