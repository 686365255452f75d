"""Training runs -> a checkpoint bundle that workers and ``mammogen generate`` load without edits.

A run folder (see :mod:`training.loop`) holds ``run.json`` with the geometry, intensity mapping,
preprocessing chain and noise schedule it was trained with, the data description, and
``final/unet_ema`` + ``final/unet``. Export copies EMA weights by default (what DDPM papers sample
with), optionally as fp16 to keep shipped bundles small, and refuses runs that disagree on geometry,
intensity or preprocessing: a bundle whose stages were trained on different canvases would generate
misregistered images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import UNet2DModel

from models.bundle import NETWORKS, BundleKind, save_bundle
from models.errors import BadInputError
from models.intensity import IntensityMapping
from models.preprocess import PreprocessConfig
from models.schedulers import NOISE_SCHEDULE
from training.loop import read_log

Weights = Literal["ema", "raw"]
SaveDtype = Literal["float32", "float16"]


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """run.json of a finished run, plus its loss curve summary; refuses unfinished runs."""
    run_dir = Path(run_dir)
    path = run_dir / "run.json"
    if not path.is_file():
        raise BadInputError(f"{run_dir} is not a training run folder (no run.json)")
    run = json.loads(path.read_text())
    if not (run_dir / "final" / "unet_ema").is_dir():
        raise BadInputError(f"{run_dir} has not finished training (no final/ weights); resume it with --resume")
    log = read_log(run_dir)
    run["summary"] = {
        "steps": log[-1]["step"] if log else 0,
        "first_loss": log[0]["loss"] if log else None,
        "final_loss": log[-1]["loss"] if log else None,
        "seconds": log[-1]["time_s"] if log else None,
    }
    return run


def load_run_unet(run_dir: str | Path, weights: Weights = "ema", dtype: torch.dtype = torch.float32) -> UNet2DModel:
    folder = Path(run_dir) / "final" / ("unet_ema" if weights == "ema" else "unet")
    return UNet2DModel.from_pretrained(folder, torch_dtype=dtype)


def export_bundle(
    kind: BundleKind,
    runs: dict[str, str | Path],
    out_dir: str | Path,
    *,
    name: str,
    version: str,
    weights: Weights = "ema",
    dtype: SaveDtype = "float32",
    description: str = "",
    intended_use: str | None = None,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a ``kind`` bundle from one finished run per network (mambo: global/local/patch; dualview)."""
    if set(runs) != set(NETWORKS[kind]):
        raise BadInputError(f"a {kind} bundle needs runs for {NETWORKS[kind]}, got {sorted(runs)}")
    loaded = {net: read_run(path) for net, path in runs.items()}
    first = loaded[NETWORKS[kind][0]]["meta"]
    for net, run in loaded.items():
        meta = run["meta"]
        if meta.get("network") != net:
            raise BadInputError(f"run {runs[net]} trained network {meta.get('network')!r}, not {net!r}")
        for key in ("geometry", "intensity", "preprocess", "schedule"):
            if meta.get(key) != first.get(key):
                raise BadInputError(f"runs disagree on {key}: {runs[net]} differs from the {NETWORKS[kind][0]} run")

    torch_dtype = torch.float16 if dtype == "float16" else torch.float32
    networks = {net: load_run_unet(path, weights, torch_dtype) for net, path in runs.items()}
    training = {
        "weights": weights,
        "stored_dtype": dtype,
        "data": loaded[NETWORKS[kind][0]]["data"],
        "networks": {
            net: {
                **run["summary"],
                "config": run["config"],
                "data": run["data"],
                "num_processes": run.get("num_processes", 1),
            }
            for net, run in loaded.items()
        },
    }
    kwargs: dict[str, Any] = {} if intended_use is None else {"intended_use": intended_use}
    return save_bundle(
        out_dir,
        kind=kind,
        name=name,
        version=version,
        networks=networks,
        geometry=first["geometry"],
        intensity=IntensityMapping.from_dict(first["intensity"]),
        preprocess=PreprocessConfig.from_dict(first["preprocess"]) if first.get("preprocess") else None,
        schedule=first.get("schedule") or dict(NOISE_SCHEDULE),
        training=training,
        random_weights=False,
        description=description,
        extra=extra,
        overwrite=overwrite,
        **kwargs,
    )
