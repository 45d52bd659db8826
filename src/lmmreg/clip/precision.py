"""The autocast context CLIP's inference runs under (image features and text embeddings alike)."""

from __future__ import annotations

import contextlib

import torch


def autocast_for(device: str | torch.device, precision: str = "auto"):
    """Autocast context for inference: bf16 (fp16 where bf16 is missing) on CUDA under "auto", fp32 on CPU."""
    dev = torch.device(device)
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if dev.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext(), "fp32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(dev.type, dtype=dtype), precision
