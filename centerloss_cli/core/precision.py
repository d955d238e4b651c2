"""What the arithmetic is computed in: bf16 autocast for the network's forward pass, and TF32 on or off
for CUDA's float32 matmuls and convolutions. The losses, the centers and their update stay in fp32."""
from __future__ import annotations

import contextlib
from contextlib import contextmanager
from typing import Iterator

import torch


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
