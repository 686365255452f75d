"""The training loop: exact resume, EMA, warm-up, logging, previews, fine-tuning from a diffusers folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel
from safetensors.torch import load_file

from models.errors import BadInputError
from models.unet import build_unet
from training.loop import (
    EMA,
    TrainConfig,
    diffusion_objective,
    diffusion_previewer,
    list_checkpoints,
    load_init_unet,
    lr_lambda,
    read_log,
    step_generator,
    train,
)

SIZE = 16


class DiscSource:
    """Bright discs of random radius and position on a dark background: a problem a tiny U-Net learns fast."""

    channels = 1
    size = SIZE

    def batch(self, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
        params = torch.rand(batch_size, 3, generator=generator)
        cy, cx = 4 + params[:, 0] * 8, 4 + params[:, 1] * 8
        r = 2 + params[:, 2] * 3
        inside = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2 <= r[:, None, None] ** 2
        return (inside.float() * 2 - 1)[:, None]

    def describe(self) -> dict:
        return {"kind": "discs", "size": SIZE}


def tiny_unet(seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return build_unet("tiny", in_channels=1, out_channels=1, sample_size=SIZE)


def config(**kw) -> TrainConfig:
    base = {
        "steps": 6,
        "batch_size": 2,
        "lr": 1e-3,
        "warmup_steps": 2,
        "checkpoint_every": 100,
        "log_every": 1,
        "ema_decay": 0.9,
        "mixed_precision": "no",
    }
    return TrainConfig(**{**base, **kw})


def final_weights(run_dir: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(next((run_dir / "final" / name).glob("*.safetensors")))


def test_resume_reproduces_uninterrupted_run_bitwise(tmp_path: Path) -> None:
    cfg, objective = config(), diffusion_objective(1)
    straight = train(tiny_unet(), DiscSource(), objective, cfg, tmp_path / "straight", progress=False)
    first = train(tiny_unet(), DiscSource(), objective, cfg, tmp_path / "resumed", progress=False, stop_after=3)
    assert [s for s, _ in list_checkpoints(tmp_path / "resumed")] == [3]
    assert not (tmp_path / "resumed" / "final").exists()
    # A fresh process state: a different global seed must not matter, everything comes from the checkpoint.
    torch.manual_seed(1234)
    second = train(tiny_unet(seed=99), DiscSource(), objective, cfg, tmp_path / "resumed", progress=False, resume=True)

    assert second.resumed_from == 3
    assert first.losses + second.losses == straight.losses
    for name in ("unet", "unet_ema"):
        a, b = final_weights(tmp_path / "straight", name), final_weights(tmp_path / "resumed", name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    opt_a = torch.load(tmp_path / "straight/checkpoints/step-0000006/optimizer.bin", weights_only=False)
    opt_b = torch.load(tmp_path / "resumed/checkpoints/step-0000006/optimizer.bin", weights_only=False)
    for k, st in opt_a["state"].items():
        assert torch.equal(st["exp_avg"], opt_b["state"][k]["exp_avg"])
        assert torch.equal(st["exp_avg_sq"], opt_b["state"][k]["exp_avg_sq"])
    # The log is continuous: one row per step, replayed steps not duplicated.
    assert [r["step"] for r in read_log(tmp_path / "resumed")] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in read_log(tmp_path / "resumed")] == [r["loss"] for r in read_log(tmp_path / "straight")]


def test_existing_run_is_not_overwritten_without_resume(tmp_path: Path) -> None:
    train(tiny_unet(), DiscSource(), diffusion_objective(1), config(steps=2), tmp_path, progress=False)
    with pytest.raises(BadInputError, match="resume"):
        train(tiny_unet(), DiscSource(), diffusion_objective(1), config(steps=2), tmp_path, progress=False)


@pytest.mark.slow
def test_loss_goes_down_on_discs(tmp_path: Path) -> None:
    cfg = config(steps=60, batch_size=4, lr=3e-3, warmup_steps=5, log_every=20)
    result = train(tiny_unet(), DiscSource(), diffusion_objective(1), cfg, tmp_path, progress=False)
    start, end = np.mean(result.losses[:10]), np.mean(result.losses[-20:])
    assert end < 0.6 * start, (start, end)


def test_log_records_warmup_lr_and_preview_is_written(tmp_path: Path) -> None:
    src = DiscSource()
    cfg = config(steps=4, warmup_steps=4, lr=1e-3, sample_every=2)
    train(
        tiny_unet(),
        src,
        diffusion_objective(1),
        cfg,
        tmp_path,
        previewer=diffusion_previewer(src, 1, count=2, steps=2),
        progress=False,
    )
    rows = read_log(tmp_path)
    assert [r["lr"] for r in rows] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert all(np.isfinite(r["loss"]) and r["time_s"] >= 0 for r in rows)
    assert sorted(p.name for p in (tmp_path / "samples").glob("*.png")) == ["step-0000002.png", "step-0000004.png"]
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["data"] == src.describe() and run["config"]["steps"] == 4


def test_lr_schedule_warms_up_then_decays() -> None:
    f = lr_lambda(TrainConfig(steps=100, warmup_steps=10, lr_schedule="cosine"))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)
    g = lr_lambda(TrainConfig(steps=100, warmup_steps=0, lr_schedule="constant"))
    assert g(0) == g(99) == 1.0


def test_ema_tracks_weights_with_warmup() -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    ema = EMA([p], decay=0.99)
    p.data.fill_(1.0)
    ema.update([p])  # first decay = min(0.99, 1/10) = 0.1 -> shadow 0.9
    assert torch.allclose(ema.shadow[0], torch.full((3,), 0.9))
    state = ema.state_dict()
    other = EMA([torch.nn.Parameter(torch.ones(3))], decay=0.5)
    other.load_state_dict(state)
    assert other.num_updates == 1 and torch.equal(other.shadow[0], ema.shadow[0])


def test_step_generator_depends_only_on_seed_step_rank() -> None:
    a = torch.rand(4, generator=step_generator(0, 5, 0))
    assert torch.equal(a, torch.rand(4, generator=step_generator(0, 5, 0)))
    for other in (step_generator(1, 5, 0), step_generator(0, 6, 0), step_generator(0, 5, 1)):
        assert not torch.equal(a, torch.rand(4, generator=other))


def test_init_from_diffusers_folder_checks_channels(tmp_path: Path) -> None:
    unet = tiny_unet()
    unet.save_pretrained(tmp_path / "pipe" / "unet")  # a pipeline folder, like ddpm-celebahq-256
    loaded = load_init_unet(tmp_path / "pipe", in_channels=1, out_channels=1)
    assert all(torch.equal(a, b) for a, b in zip(unet.parameters(), loaded.parameters(), strict=True))
    with pytest.raises(BadInputError, match="channels"):
        load_init_unet(tmp_path / "pipe", in_channels=3, out_channels=1)
    with pytest.raises(BadInputError, match=r"config\.json"):
        load_init_unet(tmp_path / "nothing", in_channels=1, out_channels=1)
