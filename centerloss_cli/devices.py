"""Turning --device auto|cpu|cuda|cuda:N|mps into a torch.device, with errors that say what exists."""
from __future__ import annotations

import contextlib
from contextlib import contextmanager
from typing import Iterator

import torch

from .config import SCHEMA
from .errors import CenterLossError


def resolve_device(spec: str) -> torch.device:
    """The torch.device for `spec`; asking for a CUDA or MPS device that is not there is an error."""
    if not SCHEMA["device"].check(spec):
        raise CenterLossError(f"device = {spec!r}: expected {SCHEMA['device'].accepted}")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise CenterLossError(f"device {spec!r} asked for, but this machine has {have}; use --device cpu")
    if spec == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise CenterLossError("device 'mps' asked for, but MPS is not available here; use --device cpu")
    return torch.device(spec)


@contextmanager
def float32_precision(precision: str) -> Iterator[None]:
    """TF32 on or off for CUDA matmuls and cuDNN convolutions, for the duration of a run only.

    PyTorch lets cuDNN convolutions use TF32 by default; "fp32" turns that off so GPU results stay
    comparable with the CPU's. Both modes are torch-wide switches, so the previous ones are restored.
    """
    mode = "tf32" if precision == "tf32" else "ieee"
    switches = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
    previous = [s.fp32_precision for s in switches]
    for s in switches:
        s.fp32_precision = mode
    try:
        yield
    finally:
        for s, p in zip(switches, previous):
            s.fp32_precision = p


def autocast(precision: str, device: torch.device, cache: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast for the network's forward pass; fp32 and tf32 run it as it is. A CUDA graph needs
    `cache` off: the cast weights must be computed inside the graph, not kept from the capture."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()
