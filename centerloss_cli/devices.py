"""Turning --device auto|cpu|cuda|cuda:N|mps into a torch.device, with errors that say what exists."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from .config import SCHEMA, TrainConfig
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


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware: a CPU with AVX512_BF16 or AMX (as torch's own CPU
    dispatch reports them), a CUDA device of compute capability 8.0 or newer. Elsewhere bf16 is emulated,
    and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def cpu_has_native_bf16() -> bool:
    """AVX512_BF16 or AMX, as torch's CPU dispatch sees them (the instructions its bf16 kernels use)."""
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in
               ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def choose_precision(config: TrainConfig, device: torch.device, started: Callable[[TrainConfig], bool],
                     say: Callable[[str], None]) -> TrainConfig:
    """The config with --precision auto resolved for `device` (resolve_precision): a run is named and
    recorded by what it computes in, so runs of other arithmetic never mix. `started` tells whether the
    run (or sweep) of a resolved config exists already: one started in the other precision on another
    machine goes on in it, as a resume keeps what a run started with, and `say` tells the user so."""
    if config.precision != "auto":
        return config
    native = config.with_(precision=resolve_precision("auto", device))
    other = native.with_(precision="fp32" if native.precision == "bf16" else "bf16")
    if started(native) or not started(other):
        return native
    slower = ", emulated on this device: slower" if other.precision == "bf16" else ""
    say(f"precision auto: {device} would take {native.precision}, but this was started in {other.precision} "
        f"elsewhere; it goes on in {other.precision}{slower}")
    return other


def resolve_precision(precision: str, device: torch.device) -> str:
    """--precision auto: bf16 where `device` computes it natively (native_bf16), fp32 elsewhere; any
    other value as it is."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


@contextmanager
def cpu_threads(threads: int, device: torch.device) -> Iterator[None]:
    """Train on the CPU with the thread count the run started with: CPU results depend on it (the order of
    a sum's partial results), so this keeps a resume exact whichever process resumes it."""
    if device.type != "cpu" or threads == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
