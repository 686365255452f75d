"""Device and dtype names -> torch objects: one rule for the CLI, the workers and the benchmarks."""

from __future__ import annotations

import torch

from models.errors import BadInputError

Device = str | torch.device

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """``"bfloat16"``/``"bf16"``/``torch.bfloat16`` -> ``torch.bfloat16``; unknown names are a BadInputError."""
    if isinstance(name, torch.dtype):
        if name not in DTYPES.values():
            raise BadInputError(f"unsupported dtype {name}; use one of {sorted(DTYPES)}")
        return name
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in DTYPES:
        raise BadInputError(f"unsupported dtype {name!r}; use one of {sorted(DTYPES)}")
    return DTYPES[key]


def resolve_device(name: str | torch.device | None) -> torch.device:
    """'auto' (or None) -> cuda when available, else cpu; an explicit cuda without a GPU is a clear error."""
    if isinstance(name, torch.device):
        return name
    name = name or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError(f"device {name!r} requested but no CUDA device is available")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise BadInputError(f"unknown device {name!r}: {exc}") from exc


def resolve_dtype(name: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """'auto' -> bfloat16 on a GPU that supports it, else float32 (CPU bf16 is opt-in: not every CPU is fast at it)."""
    if name is None or name == "auto":
        dev = torch.device(device)
        return torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return parse_dtype(name)
