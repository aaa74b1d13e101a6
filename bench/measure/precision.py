"""What arithmetic a measured row ran in: float32 meaning float32, TF32 only when asked, bf16 only where native.

On an Ampere+ GPU, PyTorch runs float32 convolutions in TF32 by default (`cudnn.allow_tf32`),
so a "float32" row would really be TF32 and the bf16/float32 ratio understated. Every timed
call therefore sets both TF32 flags for its own dtype and restores them after; `tf32` is a
setting of its own. A dtype the device cannot compute natively (TF32 or bf16 before compute
capability 8.0, TF32 on a CPU) is not measured: its row says why.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

DTYPES = ("float32", "tf32", "bfloat16")
NATIVE_CAPABILITY = (8, 0)  # Ampere: TF32 and bf16 tensor cores


def tf32_flags() -> dict[str, Any]:
    """The process's TF32 settings, as environment.json records them."""
    return {
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


@contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 on or off for cuDNN convolutions and cuBLAS matmuls in the block; the flags are restored after."""
    cudnn, precision = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn
        torch.set_float32_matmul_precision(precision)  # also restores cuda.matmul.allow_tf32


@contextmanager
def precision(device_type: str, dtype: str) -> Iterator[None]:
    """Run the block in `dtype`: float32 with TF32 off, tf32 with it on, bfloat16 under autocast (TF32 off)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    with tf32(dtype == "tf32"), torch.autocast(device_type, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
        yield


def unsupported(device: torch.device, dtype: str) -> str | None:
    """Why `dtype` is not measured on `device` (a row's note), or None when it is native there."""
    if dtype == "tf32" and device.type != "cuda":
        return "not measured: TF32 is a CUDA mode (compute capability 8.0+)"
    if device.type != "cuda" or dtype == "float32":
        return None
    capability = torch.cuda.get_device_capability(device)
    if capability < NATIVE_CAPABILITY:
        return (f"not measured: {torch.cuda.get_device_name(device)} (compute capability "
                f"{capability[0]}.{capability[1]}) has no native {dtype}; it needs 8.0+")
    return None


def float32_label(device: torch.device) -> str:
    """What a float32 training step, run under the process's own flags, really computes in: `tf32` where
    the GPU has TF32 and either flag allows it (cuDNN's default does), else `float32`."""
    flags = tf32_flags()
    tf32_on = flags["cudnn_allow_tf32"] or flags["cuda_matmul_allow_tf32"]
    return "tf32" if tf32_on and device.type == "cuda" and unsupported(device, "tf32") is None else "float32"
