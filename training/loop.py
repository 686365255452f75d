"""The training loop: one U-Net, one batch source, HuggingFace accelerate underneath.

Why it looks the way it does:

- ``accelerate launch`` spreads the same script over GPUs and hosts, so every device-specific
  concern (DDP wrapping, bf16 autocast, gradient sync, checkpoint files) goes through the
  ``Accelerator``; the loop itself is plain PyTorch.
- Resume must be exact. The data position is therefore not an iterator's hidden state: a
  batch, its timesteps and its noise are a pure function of ``(seed, step, rank)``
  (:func:`step_generator`). A checkpoint holds model, optimizer, LR scheduler, EMA and RNG
  states plus the step; resuming from step N replays steps N.. exactly as an uninterrupted run.
- The run folder is the contract with :mod:`training.export`: ``run.json`` (config, model,
  data description), ``log.jsonl``, ``checkpoints/step-XXXXXXX/``, ``samples/``, and
  ``final/unet`` + ``final/unet_ema`` (diffusers ``save_pretrained`` folders).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from diffusers import UNet2DModel
from tqdm.auto import tqdm

from models.errors import BadInputError
from models.imaging.files import atomic_write, write_png8
from models.intensity import IntensityMapping
from models.schedulers import NOISE_SCHEDULE, channel0_loss, full_schedule, make_scheduler, scheduler_step

MixedPrecision = Literal["auto", "no", "bf16"]
LrSchedule = Literal["constant", "cosine", "linear"]

CHECKPOINT_PREFIX = "step-"


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one run (the MAMBO paper: Adam, lr 5e-5, batch 8; dual-view: AdamW, 1e-5, 16)."""

    steps: int = 1000
    batch_size: int = 8
    lr: float = 5e-5
    optimizer: Literal["adamw", "adam"] = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_schedule: LrSchedule = "constant"  # after warm-up
    grad_clip: float = 1.0  # max global grad norm; <= 0 disables clipping
    ema_decay: float = 0.999
    checkpoint_every: int = 500  # also always at the last step
    keep_checkpoints: int = 2  # newest N kept; 0 keeps all
    sample_every: int = 0  # 0: only at the end (if a previewer is given)
    log_every: int = 10
    seed: int = 0
    mixed_precision: MixedPrecision = "auto"  # auto: models.devices' rule (bf16 on a bf16 GPU, else fp32)
    min_snr_gamma: float = 0.0  # > 0: Min-SNR-gamma loss weights (models.schedulers.loss_weights)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "betas" in known:
            known["betas"] = tuple(known["betas"])
        return cls(**known)


def recipe_config(
    steps: int,
    *,
    batch_size: int,
    lr: float,
    warmup_steps: int,
    lr_schedule: LrSchedule,
    ema_half_life: float,
    checkpoint_every: int,
    seed: int,
    min_snr_gamma: float = 0.0,
) -> TrainConfig:
    """The project's recipe as a TrainConfig (docs/TRAINING.md): AdamW, grad clip 1, warm-up at most a fifth
    of the run, and an EMA whose half-life is ``ema_half_life`` of the run whatever its length."""
    return TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        optimizer="adamw",
        warmup_steps=min(warmup_steps, max(steps // 5, 1)),
        lr_schedule=lr_schedule,
        grad_clip=1.0,
        ema_decay=float(0.5 ** (1.0 / max(1.0, ema_half_life * steps))),
        checkpoint_every=checkpoint_every,
        seed=seed,
        min_snr_gamma=min_snr_gamma,
    )


class BatchSource(Protocol):
    """Where training batches come from: a pure function of (seed, step, rank)."""

    channels: int
    size: int

    def batch(self, generator: torch.Generator, batch_size: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, channels, size, size) float32 in model range [-1, 1], drawn only from ``generator``;
        class-labelled sources return (that, (B,) int64 class indices)."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-able description of the data, recorded in run.json and the bundle manifest."""
        ...


#: (unet, x0 batch, generator[, class labels]) -> scalar loss. Timesteps and noise must come from ``generator``.
Objective = Callable[..., torch.Tensor]
#: (EMA unet, generator) -> images in [0, 1], (N, H, W) or (N, H, W, 3), for a PNG preview grid.
Previewer = Callable[[UNet2DModel, torch.Generator], np.ndarray]


def step_generator(seed: int, step: int, rank: int = 0, stream: int = 0) -> torch.Generator:
    """A CPU generator that depends only on (seed, step, rank, stream): the whole data position."""
    state = np.random.SeedSequence([seed, step, rank, stream]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


# -- the diffusion objective and its preview -------------------------------------------------


def diffusion_objective(
    denoised_channels: int,
    schedule: dict[str, Any] | None = None,
    min_snr_gamma: float = 0.0,
    label_dropout: float = 0.0,
    null_label: int | None = None,
) -> Objective:
    """Algorithm 1 on batches whose first ``denoised_channels`` channels are denoised, the rest clean context.

    Class labels, when the batch has them, are replaced by ``null_label`` with probability
    ``label_dropout``, so one network also learns the unconditional case (classifier-free guidance).
    """
    num_t = int(full_schedule(schedule)["num_train_timesteps"])
    if label_dropout > 0 and null_label is None:
        raise ValueError("label dropout needs the null label")

    def objective(
        unet: UNet2DModel, x: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        x0 = x[:, :denoised_channels]
        cond = x[:, denoised_channels:] if x.shape[1] > denoised_channels else None
        timesteps = torch.randint(0, num_t, (x.shape[0],), generator=generator).to(x.device)
        noise = torch.randn(x0.shape, generator=generator).to(device=x.device, dtype=x.dtype)
        if labels is not None and label_dropout > 0:
            drop = (torch.rand(labels.shape, generator=generator) < label_dropout).to(labels.device)
            labels = torch.where(drop, torch.full_like(labels, int(null_label)), labels)  # type: ignore[arg-type]
        return channel0_loss(unet, x0, cond, timesteps, noise, schedule, min_snr_gamma, labels)

    return objective


def diffusion_previewer(
    source: BatchSource,
    denoised_channels: int,
    count: int = 4,
    steps: int = 25,
    schedule: dict[str, Any] | None = None,
) -> Previewer:
    """DDIM samples of the EMA model. Conditioned stages take real context from ``source`` and show
    each generated channel 0 next to the real one it should resemble (generated | real)."""

    @torch.no_grad()
    def preview(unet: UNet2DModel, generator: torch.Generator) -> np.ndarray:
        device = next(unet.parameters()).device
        drawn = source.batch(generator, count)
        x, labels = (drawn[0], drawn[1].to(device)) if isinstance(drawn, tuple) else (drawn, None)
        x = x.to(device)
        extra = {} if labels is None else {"class_labels": labels}
        cond = x[:, denoised_channels:] if x.shape[1] > denoised_channels else None
        sch = make_scheduler("ddim", schedule)
        sch.set_timesteps(steps)
        sample = torch.randn(x[:, :denoised_channels].shape, generator=generator).to(device)
        for t in sch.timesteps:
            # 1. predict (noise or v, as the schedule says) of the denoised channels, context given clean
            inputs = sample if cond is None else torch.cat([sample, cond], dim=1)
            out = unet(inputs, t, **extra).sample
            # 2. x_t -> x_t-1
            sample = scheduler_step(sch, out, t, sample, None)
        gen = IntensityMapping.from_model(sample.float()).cpu().numpy()
        if denoised_channels == 3:  # dual-view: show as RGB
            return gen.transpose(0, 2, 3, 1)
        gen = gen[:, 0]
        if cond is None:
            return gen
        real = IntensityMapping.from_model(x[:, 0].float()).cpu().numpy()
        return np.concatenate([gen, real], axis=2)

    return preview


# -- EMA ---------------------------------------------------------------------------------


class EMA:
    """Exponential moving average of the weights (fp32 shadow), with the usual 1+n / 10+n warm-up.

    Own small class rather than diffusers' EMAModel so its state is a plain dict that round-trips
    through accelerate's checkpoint bit for bit.
    """

    def __init__(self, parameters: Iterable[torch.nn.Parameter], decay: float = 0.999) -> None:
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = [p.detach().clone().float() for p in parameters]

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        d = self.current_decay()
        self.num_updates += 1
        for s, p in zip(self.shadow, parameters, strict=True):
            s.lerp_(p.detach().float(), 1.0 - d)

    @torch.no_grad()
    def copy_to(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        for s, p in zip(self.shadow, parameters, strict=True):
            p.copy_(s.to(p.dtype))

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": [s.clone() for s in self.shadow]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError("EMA state does not match the model's parameters")
        for s, t in zip(self.shadow, state["shadow"], strict=True):
            s.copy_(t)


# -- learning rate -----------------------------------------------------------------------


def lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up to 1, then constant, cosine or linear decay to 0 (multiplier for LambdaLR)."""
    warm, total, kind = max(config.warmup_steps, 0), max(config.steps, 1), config.lr_schedule

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if kind == "constant":
            return 1.0
        frac = min(1.0, (step - warm) / max(1, total - warm))
        return 0.5 * (1.0 + math.cos(math.pi * frac)) if kind == "cosine" else 1.0 - frac

    return f


# -- init / fine-tuning ------------------------------------------------------------------


def load_init_unet(path: str | Path, in_channels: int, out_channels: int) -> UNet2DModel:
    """Start from a local diffusers UNet2DModel folder (e.g. ddpm-celebahq-256/unet) for fine-tuning."""
    path = Path(path)
    if (path / "unet" / "config.json").is_file():  # a whole pipeline folder was given
        path = path / "unet"
    if not (path / "config.json").is_file():
        raise BadInputError(f"--init-from {path}: not a diffusers UNet2DModel folder (no config.json)")
    unet = UNet2DModel.from_pretrained(path)
    if unet.config.in_channels != in_channels or unet.config.out_channels != out_channels:
        raise BadInputError(
            f"--init-from {path}: U-Net has {unet.config.in_channels} -> {unet.config.out_channels} channels, "
            f"this stage needs {in_channels} -> {out_channels}"
        )
    return unet


# -- run folder --------------------------------------------------------------------------


@dataclass
class RunResult:
    run_dir: Path
    steps: int
    first_loss: float | None
    final_loss: float | None
    seconds: float
    resumed_from: int | None = None
    losses: list[float] = field(default_factory=list)  # per step, this segment only


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    root = Path(run_dir) / "checkpoints"
    found = []
    for p in root.glob(f"{CHECKPOINT_PREFIX}*") if root.is_dir() else []:
        if (p / "trainer_state.json").is_file():
            found.append((int(p.name[len(CHECKPOINT_PREFIX) :]), p))
    return sorted(found)


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2, sort_keys=True) + "\n").encode()))


def _truncate_log(run_dir: Path, last_step: int) -> None:
    """On resume, drop log lines from steps after the checkpoint (they will be replayed)."""
    rows = [r for r in read_log(run_dir) if r.get("step", 0) <= last_step]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    atomic_write(run_dir / "log.jsonl", lambda f: f.write(text.encode()))


def _preview_grid(images: np.ndarray) -> np.ndarray:
    """(N, H, W[, 3]) in [0, 1] -> one row of tiles with 2-px gaps."""
    n, h, w = images.shape[:3]
    grid = np.zeros((h, n * w + 2 * (n - 1), *images.shape[3:]), dtype=np.float32)
    for i in range(n):
        grid[:, i * (w + 2) : i * (w + 2) + w] = images[i]
    return grid


def _make_accelerator(mixed_precision: MixedPrecision) -> Any:
    from accelerate import Accelerator

    from models.devices import resolve_device, resolve_dtype

    device = resolve_device("auto")  # the one device/dtype rule (models/devices.py), as serving uses
    if mixed_precision == "auto":
        mixed_precision = "bf16" if resolve_dtype("auto", device) == torch.bfloat16 else "no"
    return Accelerator(mixed_precision=mixed_precision, cpu=device.type != "cuda")


# -- the loop ----------------------------------------------------------------------------


def train(
    unet: UNet2DModel,
    source: BatchSource,
    objective: Objective,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    previewer: Previewer | None = None,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> RunResult:
    """Train ``unet`` on ``source`` for ``config.steps`` steps (or until ``stop_after``), checkpointing.

    ``meta`` (stage, geometry, intensity, ...) is stored in run.json for the exporter. With
    ``resume`` the newest checkpoint in ``run_dir`` is restored first; without it, an existing
    run folder with checkpoints is refused rather than silently mixed.
    """
    run_dir = Path(run_dir)
    if unet.config.in_channels != source.channels:
        raise BadInputError(f"U-Net takes {unet.config.in_channels} channels, the data has {source.channels}")
    checkpoints = list_checkpoints(run_dir)
    if checkpoints and not resume:
        raise BadInputError(f"{run_dir} already holds checkpoints; pass --resume or choose a new --out")
    run_dir.mkdir(parents=True, exist_ok=True)

    accelerator = _make_accelerator(config.mixed_precision)
    torch.manual_seed(config.seed)  # anything outside our per-step generators (e.g. dropout)

    opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(unet.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    model, optimizer, scheduler = accelerator.prepare(unet, optimizer, scheduler)
    ema = EMA(accelerator.unwrap_model(model).parameters(), decay=config.ema_decay)
    accelerator.register_for_checkpointing(ema)

    start, elapsed_before, resumed_from = 0, 0.0, None
    if resume and checkpoints:
        step_done, ckpt = checkpoints[-1]
        accelerator.load_state(str(ckpt))
        state = json.loads((ckpt / "trainer_state.json").read_text())
        start, elapsed_before, resumed_from = int(state["step"]), float(state["elapsed_s"]), step_done
        if accelerator.is_main_process:
            _truncate_log(run_dir, start)
    elif accelerator.is_main_process:
        (run_dir / "log.jsonl").unlink(missing_ok=True)  # a fresh run (no checkpoint yet) starts a fresh log
    if accelerator.is_main_process:
        _write_json(
            run_dir / "run.json",
            {
                "config": config.to_dict(),
                "data": source.describe(),
                "unet": dict(accelerator.unwrap_model(model).config),
                "meta": meta or {},
                "num_processes": accelerator.num_processes,
            },
        )

    end = config.steps if stop_after is None else min(config.steps, stop_after)
    rank, device = accelerator.process_index, accelerator.device
    losses: list[float] = []
    window: list[float] = []
    t0 = time.monotonic()
    bar = tqdm(
        range(start, end),
        initial=start,
        total=config.steps,
        disable=not (progress and accelerator.is_main_process),
        desc="train",
    )
    for step in bar:
        gen = step_generator(config.seed, step, rank)
        drawn = source.batch(gen, config.batch_size)
        x0, labels = (
            (drawn[0].to(device), drawn[1].to(device)) if isinstance(drawn, tuple) else (drawn.to(device), None)
        )
        model.train()
        with accelerator.autocast():
            loss = objective(model, x0, gen) if labels is None else objective(model, x0, gen, labels)
        accelerator.backward(loss)
        grad_norm = None
        if config.grad_clip > 0:
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
        lr_used = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(accelerator.unwrap_model(model).parameters())

        loss_value = float(accelerator.gather(loss.detach()[None]).mean())
        losses.append(loss_value)
        window.append(loss_value)
        done = step + 1
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if accelerator.is_main_process and (done % max(config.log_every, 1) == 0 or done == end):
            row = {
                "step": done,
                "loss": float(np.mean(window)),
                "lr": lr_used,
                "grad_norm": None if grad_norm is None else float(grad_norm),
                "time_s": round(elapsed_before + time.monotonic() - t0, 3),
            }
            with open(run_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            window = []
        if (config.checkpoint_every > 0 and done % config.checkpoint_every == 0) or done == end:
            _save_checkpoint(accelerator, run_dir, done, elapsed_before + time.monotonic() - t0, config)
        if previewer is not None and config.sample_every > 0 and done % config.sample_every == 0:
            _write_preview(accelerator, model, ema, previewer, run_dir, done, config.seed)

    seconds = elapsed_before + time.monotonic() - t0
    if end == config.steps:
        _save_final(accelerator, model, ema, run_dir)
        if previewer is not None and (config.sample_every <= 0 or end % config.sample_every):
            _write_preview(accelerator, model, ema, previewer, run_dir, end, config.seed)
    accelerator.wait_for_everyone()
    accelerator.free_memory()
    log = read_log(run_dir)
    return RunResult(
        run_dir=run_dir,
        steps=end,
        first_loss=log[0]["loss"] if log else None,
        final_loss=log[-1]["loss"] if log else None,
        seconds=seconds,
        resumed_from=resumed_from,
        losses=losses,
    )


def _save_checkpoint(accelerator: Any, run_dir: Path, step: int, elapsed: float, config: TrainConfig) -> None:
    ckpt = run_dir / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:07d}"
    tmp = ckpt.with_name(ckpt.name + ".partial")
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        _write_json(tmp / "trainer_state.json", {"step": step, "elapsed_s": elapsed})
        if ckpt.exists():
            shutil.rmtree(ckpt)
        tmp.rename(ckpt)  # a checkpoint is complete or absent, never half-written
        if config.keep_checkpoints > 0:
            for _, old in list_checkpoints(run_dir)[: -config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _ema_copy(accelerator: Any, model: Any, ema: EMA) -> UNet2DModel:
    raw = accelerator.unwrap_model(model)
    copy = UNet2DModel.from_config(raw.config).to(accelerator.device)
    ema.copy_to(copy.parameters())
    return copy.eval()


def _save_final(accelerator: Any, model: Any, ema: EMA, run_dir: Path) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(run_dir / "final" / "unet")
        _ema_copy(accelerator, model, ema).save_pretrained(run_dir / "final" / "unet_ema")


@torch.no_grad()
def _write_preview(
    accelerator: Any, model: Any, ema: EMA, previewer: Previewer, run_dir: Path, step: int, seed: int
) -> None:
    if not accelerator.is_main_process:
        return
    images = previewer(_ema_copy(accelerator, model, ema), step_generator(seed, 0, 0, stream=1))
    write_png8(run_dir / "samples" / f"step-{step:07d}.png", _preview_grid(np.asarray(images, dtype=np.float32)))


# -- one stage, end to end (used by `mammogen train`, the demo and the tests) --------------------


def train_stage(
    images: Any,
    stage: str,
    run_dir: str | Path,
    *,
    config: TrainConfig,
    geometry: Any,
    preset: str = "tiny",
    dualview_size: int = 256,
    init_from: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    preview_steps: int = 25,
    schedule: dict[str, Any] | None = None,
) -> RunResult:
    """Train ``stage`` (stage1|stage2|stage3|dualview) on preprocessed ``images`` into ``run_dir``.

    ``schedule`` (default: the paper's) is recorded in run.json and from there in the bundle, so
    every sampler reads the network's output as it was trained.

    Builds the batch source through the geometry module, a fresh U-Net of ``preset`` (or the
    ``init_from`` diffusers folder), and records in run.json what the exporter needs, including the
    preprocessing chain the images went through (their ``describe()["preprocess"]``; the default
    chain when a set does not say).
    """
    from models.preprocess import DEFAULT_PREPROCESS, PreprocessConfig
    from models.unet import build_unet
    from training.datasets import STAGE_NAMES, make_source, native_size

    source = make_source(images, stage, geometry, dualview_size)
    recorded = images.describe().get("preprocess")
    preprocess = PreprocessConfig.from_dict(recorded) if recorded else DEFAULT_PREPROCESS
    denoised = 3 if stage == "dualview" else 1
    if init_from is not None:
        unet = load_init_unet(init_from, source.channels, denoised)
    else:
        torch.manual_seed(config.seed)
        unet = build_unet(preset, source.channels, denoised, sample_size=source.size)
    if stage == "dualview":
        kind, network, geom = "dualview", "dualview", {"size": source.size, "chest_wall": "left"}
    else:
        kind, network = "mambo", STAGE_NAMES[stage]
        geom = {**geometry.to_dict(), "chest_wall": "left", "native_size": native_size(images)}
    meta = {
        "kind": kind,
        "network": network,
        "preset": preset if init_from is None else f"init-from:{init_from}",
        "geometry": geom,
        "intensity": preprocess.intensity.to_dict(),
        "preprocess": preprocess.to_dict(),
        "schedule": full_schedule(schedule or NOISE_SCHEDULE),
    }
    previewer = diffusion_previewer(source, denoised, steps=preview_steps, schedule=meta["schedule"])
    return train(
        unet,
        source,
        diffusion_objective(denoised, meta["schedule"], config.min_snr_gamma),
        config,
        run_dir,
        resume=resume,
        previewer=previewer if preview_steps > 0 else None,
        meta=meta,
        progress=progress,
        stop_after=stop_after,
    )
