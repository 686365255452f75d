"""Speed-ups of a denoising U-Net, as switches that can each be measured on and off.

The pipeline keeps every piece of arithmetic that must be exact in fp32 (scheduler steps, forward
noising of known pixels, replacement, stitching); only the network itself runs in the chosen dtype
and memory format. `prepare_unet` therefore returns a wrapper that takes fp32 NCHW tensors, runs the
network in its own precision/layout, and hands fp32 NCHW back: a pipeline written for fp32 networks
calls it unchanged and gets the speed-up without touching its own math.

Switches (`Acceleration`):
- ``dtype``: bf16/fp16 weights *and* activations (tensor cores on GPU, AVX512-BF16/AMX on CPU).
- ``channels_last``: NHWC convolution kernels (cuDNN and oneDNN are faster on NHWC).
- ``compile_mode``: ``torch.compile`` with static shapes; ``"reduce-overhead"`` and ``"max-autotune"``
  also capture CUDA graphs, which pay at small batches where kernel launches dominate.
- ``sdpa``: fused scaled-dot-product attention instead of the explicit softmax(QK^T)V.
- ``static_batches``: pad each batch to a power of two so compiled graphs / CUDA graphs are reused
  for the handful of bucket sizes instead of recompiling for every wavefront length.
- ``cudnn_benchmark``: let cuDNN pick the fastest convolution for each (static) shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from models.devices import parse_dtype
from models.errors import BadInputError
from models.unet import null_class

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
#: The named settings of ``MAMMOGEN_ACCELERATION`` / ``--acceleration`` (any `Acceleration.label` works too).
SETTINGS = ("auto", "reference", "optimised")
#: Attributes under which the pipelines hold their networks (MAMBO's three and its optional lesion network,
#: dual-view's one).
NETWORK_ATTRIBUTES = ("global_unet", "local_unet", "patch_unet", "lesion_unet", "unet")
#: Compiled graphs per network = its batch buckets; dynamo's default limit (8 per code object, which all
#: networks of a pipeline share) would silently fall back to eager after a few buckets.
RECOMPILE_LIMIT = 64


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def bf16_is_fast(device: str | torch.device) -> bool:
    """Whether bf16 matmuls/convs run on native hardware here (else bf16 is emulated and *slower*).

    CPU: AVX512-BF16 or AMX tiles (oneDNN then uses them); CUDA: compute capability >= 8.0.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


@dataclass(frozen=True)
class Acceleration:
    """Which speed-ups to apply to a network; the default is the reference configuration (fp32, NCHW)."""

    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    compile_mode: str | None = None
    sdpa: bool = True
    static_batches: bool = False
    cudnn_benchmark: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", parse_dtype(self.dtype))
        if self.compile_mode is not None and self.compile_mode not in COMPILE_MODES:
            raise BadInputError(f"unknown compile mode {self.compile_mode!r}; use one of {COMPILE_MODES}")

    @classmethod
    def reference(cls) -> Acceleration:
        """The reference code's configuration: fp32, NCHW, eager, explicit attention."""
        return cls(sdpa=False)

    @classmethod
    def optimised_for(cls, device: str | torch.device, compile: bool | None = None) -> Acceleration:
        """The fastest configuration measured for this device (see docs/PERFORMANCE.md).

        CPU: bf16 weights + channels_last where bf16 is native, else fp32 + channels_last; no
        compile by default (70-110 s of compile time for 1.2-1.5x). CUDA: bf16, channels_last,
        compile with CUDA graphs ("reduce-overhead": no autotuning, so a few power-of-two batch
        buckets compile in minutes) and padded static batches.
        """
        device = torch.device(device)
        fast_bf16 = bf16_is_fast(device)
        on_cuda = device.type == "cuda"
        use_compile = on_cuda if compile is None else compile
        return cls(
            dtype=torch.bfloat16 if fast_bf16 else torch.float32,
            channels_last=True,
            compile_mode=("reduce-overhead" if on_cuda else "default") if use_compile else None,
            sdpa=True,
            static_batches=use_compile,
            cudnn_benchmark=on_cuda,
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["dtype"] = dtype_name(self.dtype)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Acceleration:
        return cls(**data)

    @classmethod
    def from_label(cls, label: str) -> Acceleration:
        """The inverse of :attr:`label`: ``"bfloat16+channels_last+sdpa"`` -> that configuration."""
        parts = [p.strip() for p in label.split("+") if p.strip()]
        if not parts:
            raise BadInputError("an empty acceleration label")
        changes: dict[str, Any] = {"dtype": parts[0], "sdpa": False}
        for part in parts[1:]:
            key, _, value = part.partition("=")
            if key == "channels_last":
                changes["channels_last"] = True
            elif key == "compile":
                changes["compile_mode"] = value or "default"
            elif key in ("sdpa", "explicit-attn"):
                changes["sdpa"] = key == "sdpa"
            elif key == "static-batches":
                changes["static_batches"] = True
            else:
                raise BadInputError(f"unknown acceleration switch {part!r} in {label!r}")
        if "explicit-attn" not in parts and "sdpa" not in parts:
            changes["sdpa"] = True
        accel = cls(**changes)
        return accel.with_(cudnn_benchmark=accel.compile_mode is not None or accel.channels_last)

    def with_(self, **changes: Any) -> Acceleration:
        return replace(self, **changes)

    @property
    def label(self) -> str:
        parts = [dtype_name(self.dtype)]
        if self.channels_last:
            parts.append("channels_last")
        if self.compile_mode:
            parts.append(f"compile={self.compile_mode}")
        parts.append("sdpa" if self.sdpa else "explicit-attn")
        if self.static_batches:
            parts.append("static-batches")
        return "+".join(parts)


def set_attention(unet: nn.Module, sdpa: bool) -> int:
    """Switch every diffusers ``Attention`` block to fused SDPA or the explicit bmm-softmax-bmm path.

    Returns how many attention blocks were switched (0 for networks without attention).
    """
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

    count = 0
    for module in unet.modules():
        if isinstance(module, Attention):
            module.set_processor(AttnProcessor2_0() if sdpa else AttnProcessor())
            count += 1
    return count


def bucket_size(n: int) -> int:
    """The power of two >= n: the batch a static-shape graph is compiled/captured for."""
    if n < 1:
        raise ValueError("batch must be >= 1")
    return 1 << (n - 1).bit_length()


class PreparedUNet(nn.Module):
    """A network run in its own dtype/layout behind an fp32 NCHW interface.

    Called like a diffusers ``UNet2DModel`` (``net(sample, timestep).sample`` or
    ``net(sample, timestep, return_dict=False)[0]``); the prediction comes back as contiguous fp32,
    so scheduler math, replacement and stitching stay fp32 whatever the network's precision.
    """

    def __init__(self, unet: nn.Module, acceleration: Acceleration) -> None:
        super().__init__()
        self.unet = unet
        self.acceleration = acceleration
        forward = unet
        if acceleration.compile_mode is not None:
            forward = torch.compile(unet, mode=acceleration.compile_mode, dynamic=False, fullgraph=False)
        # Kept out of the module tree so the weights appear once in state_dict()/parameters().
        self.__dict__["_forward"] = forward

    # Pass-through of what pipelines read off a diffusers model.
    @property
    def config(self) -> Any:
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.acceleration.dtype

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.acceleration.channels_last else torch.contiguous_format

    @torch.no_grad()
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> Any:
        n = sample.shape[0]
        x = sample.to(dtype=self.acceleration.dtype)
        t = timestep
        if self.acceleration.static_batches and n != bucket_size(n):
            pad = bucket_size(n) - n
            x = torch.cat([x, x[-1:].expand(pad, *x.shape[1:])])
            if isinstance(t, torch.Tensor) and t.ndim == 1 and t.shape[0] == n:
                t = torch.cat([t, t[-1:].expand(pad)])
            if class_labels is not None:
                class_labels = torch.cat([class_labels, class_labels[-1:].expand(pad)])
        x = x.contiguous(memory_format=self.memory_format)
        graphs = self.acceleration.compile_mode in CUDA_GRAPH_MODES and x.device.type == "cuda"
        if graphs:  # each call is a new iteration: earlier outputs may be reused by the graph pool
            torch.compiler.cudagraph_mark_step_begin()
        out = self._forward(x, t, class_labels=class_labels, return_dict=False)[0]
        eps = out[:n].to(dtype=torch.float32).contiguous()
        if graphs and eps.data_ptr() == out.data_ptr():
            eps = eps.clone()  # a CUDA graph's output buffer is overwritten by the next replay
        if return_dict:
            from diffusers.models.unets.unet_2d import UNet2DOutput

            return UNet2DOutput(sample=eps)
        return (eps,)


def prepare_unet(
    unet: nn.Module,
    acceleration: Acceleration | None = None,
    device: str | torch.device | None = None,
) -> PreparedUNet:
    """Apply ``acceleration`` to ``unet`` (in place: weights are cast, not copied) and wrap it.

    The wrapper is what the pipeline should call instead of the bare network.
    """
    acceleration = acceleration or Acceleration()
    # nn.Module.to, not diffusers' override: the latter warns on every cast about fp32-pinned
    # modules, and UNet2DModel pins none.
    if device is not None:
        nn.Module.to(unet, device)
    unet.eval().requires_grad_(False)
    nn.Module.to(unet, dtype=acceleration.dtype)
    if acceleration.channels_last:
        nn.Module.to(unet, memory_format=torch.channels_last)
    set_attention(unet, acceleration.sdpa)
    if acceleration.cudnn_benchmark and torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    if acceleration.compile_mode is not None:
        _raise_recompile_limit()
    return PreparedUNet(unet, acceleration)


def _raise_recompile_limit() -> None:
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):  # renamed across torch versions
        if hasattr(dynamo_config, name) and getattr(dynamo_config, name) < RECOMPILE_LIMIT:
            setattr(dynamo_config, name, RECOMPILE_LIMIT)


def resolve_acceleration(
    setting: str, device: str | torch.device, dtype: str | torch.dtype | None = None
) -> Acceleration:
    """``MAMMOGEN_ACCELERATION`` (or ``--acceleration``) -> the configuration the networks run in.

    - ``auto``: the measured-fastest configuration of the device (`Acceleration.optimised_for`): CUDA
      bf16 + channels_last + SDPA + compile (CUDA graphs, static batch buckets); CPU bf16 where it is
      native (else fp32) + channels_last + SDPA, eager (docs/PERFORMANCE.md: 1.6-1.8x fp32 on the demo
      networks, compile adds ~3 % for minutes of start-up); other devices fp32 + SDPA.
    - ``optimised``: `Acceleration.optimised_for` on any device.
    - ``reference``: the reference code's fp32, NCHW, eager, explicit attention.
    - a label such as ``bfloat16+channels_last+sdpa``: exactly that.

    ``dtype``: an explicit network dtype (``MAMMOGEN_DTYPE``) overrides the configuration's; ``auto``/None
    keeps it.
    """
    device = torch.device(device)
    if setting == "auto":
        accel = Acceleration.optimised_for(device) if device.type in ("cpu", "cuda") else Acceleration()
    elif setting == "optimised":
        accel = Acceleration.optimised_for(device)
    elif setting == "reference":
        accel = Acceleration.reference()
    else:
        accel = Acceleration.from_label(setting)
    if accel.compile_mode in CUDA_GRAPH_MODES and device.type != "cuda":
        accel = accel.with_(compile_mode="default")  # CUDA graphs need CUDA; keep the compile
    if dtype is not None and dtype != "auto":
        accel = accel.with_(dtype=parse_dtype(dtype))
    return accel


def accelerate(pipeline: Any, acceleration: Acceleration, device: str | torch.device | None = None) -> Any:
    """Replace every network of a pipeline (MAMBO's three, dual-view's one; super-resolution and anomaly
    pipelines through the MAMBO pipeline they hold) by its prepared wrapper, in place; returns the
    pipeline. The CLI and the worker both call this, so they run the same kernels and give the same pixels."""
    prepared: dict[int, PreparedUNet] = {}  # one wrapper per network, however many pipelines hold it
    for holder in (getattr(pipeline, "mambo", None), pipeline):
        for name in NETWORK_ATTRIBUTES:
            net = getattr(holder, name, None)
            if isinstance(net, PreparedUNet):
                net = net.unet
            if isinstance(net, nn.Module):
                if id(net) not in prepared:
                    prepared[id(net)] = prepare_unet(net, acceleration, device)
                setattr(holder, name, prepared[id(net)])
    return pipeline


def networks_of(pipeline: Any) -> dict[str, PreparedUNet]:
    """The prepared networks of a pipeline by attribute name."""
    return {n: net for n in NETWORK_ATTRIBUTES if isinstance(net := getattr(pipeline, n, None), PreparedUNet)}


def warm_up(net: PreparedUNet, size: tuple[int, int], batches: list[int]) -> None:
    """One forward pass per batch size on ``size`` tiles: compiles (and captures) each static-batch
    bucket, autotunes cuDNN and creates the CPU kernels, so the first job pays none of it."""
    cfg = net.config
    t = torch.tensor(500, dtype=torch.long, device=net.device)  # 0-d, as the samplers pass it: the same graph
    # a class-conditional network (lesion kinds, classes) needs labels, as the samplers always pass: "no class"
    null = null_class(net)  # type: ignore[arg-type]
    # CUDA graph trees run a new graph once eagerly and record it on the next call: two calls per bucket
    calls = 2 if net.acceleration.compile_mode in CUDA_GRAPH_MODES and net.device.type == "cuda" else 1
    for batch in batches:
        labels = None if null is None else torch.full((batch,), null, dtype=torch.long, device=net.device)
        for _ in range(calls):
            net(torch.zeros(batch, cfg.in_channels, *size, device=net.device), t, labels, return_dict=False)


def warmup_batches(acceleration: Acceleration, max_batch: int) -> list[int]:
    """The batch sizes to warm: every power-of-two bucket up to ``max_batch``'s when graphs are compiled
    for static batches (each bucket is its own graph), else one call (kernel creation)."""
    if acceleration.compile_mode is None or not acceleration.static_batches:
        return [1]
    return [1 << i for i in range(bucket_size(max(1, max_batch)).bit_length())]
