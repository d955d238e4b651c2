"""Turning --device auto|cpu|cuda|cuda:N|mps into a torch.device, with errors that say what exists; --precision
auto, and what bf16 costs where it is emulated; the CPU threads a run keeps; and the sizes the machine bounds."""
from __future__ import annotations

import os
import resource
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping

import torch

from ..core.schedule import total_steps
from ..errors import CenterLossError
from .config import MAX_STEPS, SCHEMA, TrainConfig


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


# bf16 emulated (where a CPU lacks its instructions, or a switch caps torch's kernels below them) costs this
# many fp32 steps a step: `bench/precision.py --repeat 25` under ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
# on a 2-core AMD EPYC, torch 2.14.1, timed a training step at 378 ms in fp32 and 4,671 ms in bf16
# (bench/RESULTS.md, "An AVX2 CPU").
EMULATED_BF16_SLOWDOWN = 12

# oneDNN (which runs the convolutions) caps its kernels at ONEDNN_MAX_CPU_ISA (or the older DNNL_MAX_CPU_ISA);
# below AVX512_CORE_BF16 none of them has bf16 instructions, so bf16 is emulated whatever the CPU has.
ONEDNN_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")
# ATen's own vectorised kernels, capped by ATEN_CPU_CAPABILITY (torch.backends.cpu.get_cpu_capability
# reports the cap): below AVX512 they convert bf16 to fp32 and back.
ATEN_CAPABILITIES_WITHOUT_BF16 = ("DEFAULT", "NO AVX", "AVX2")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware: a CPU with AVX512_BF16 or AMX whose kernels are not capped
    below them (emulated_bf16_reason), a CUDA device of compute capability 8.0 or newer. Elsewhere bf16
    is emulated, and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return emulated_bf16_reason(os.environ) is None
    return False


def emulated_bf16_reason(env: Mapping[str, str]) -> str | None:
    """Why this CPU emulates bf16, in a few words; None where it computes bf16 natively. `env` holds the
    switches that cap torch's CPU kernels (the process's environment, which torch read at its start)."""
    if not any(getattr(torch.cpu, probe, lambda: False)() for probe in
               ("_is_avx512_bf16_supported", "_is_amx_tile_supported")):
        return "this CPU has neither AVX512_BF16 nor AMX"
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        if env.get(name, "").strip().upper() in ONEDNN_ISAS_WITHOUT_BF16:
            return f"{name}={env[name].strip()} caps oneDNN's kernels below bf16"
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.upper() in ATEN_CAPABILITIES_WITHOUT_BF16:
        return f"torch's CPU kernels run at {capability} (ATEN_CPU_CAPABILITY), below bf16"
    return None


def emulated_bf16_warning(config: TrainConfig, device: torch.device, resumed: bool) -> str | None:
    """The one line that says a run computes in bf16 where `device` emulates it, with the cost and the fast
    way; None where it does not. A run started in bf16 stays bf16 on resume (its arithmetic is its identity)."""
    if config.precision != "bf16" or device.type != "cpu":
        return None
    reason = emulated_bf16_reason(os.environ)
    if reason is None:
        return None
    fast = "a new run with --precision fp32 (or auto) is the fast way" if resumed else \
        "--precision fp32 (or auto) trains fast"
    kept = "this run started in bf16 and goes on in it; " if resumed else ""
    return (f"precision bf16 is emulated here ({reason}): about {EMULATED_BF16_SLOWDOWN}x slower than fp32 "
            f"(bench/RESULTS.md); {kept}{fast}")


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
    if other.precision == "fp32":
        say(f"precision auto: {device} would take bf16, but this was started in fp32 elsewhere; it goes on in fp32")
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


# Memory one training image takes in a step (activations kept for the backward pass, their gradients,
# the input): about 1.5 MB for LeNet++ in fp32, measured as the growth of peak memory from batch 128 to 1024.
BYTES_PER_IMAGE = 1_600_000


def check_fits(config: TrainConfig, n_train: int, device: torch.device) -> None:
    """Sizes that the data and the machine bound, refused before anything is allocated."""
    if config.batch_size > n_train:
        raise CenterLossError(f"batch_size = {config.batch_size}: larger than the {n_train} training images; "
                              f"expected at most {n_train}")
    steps = total_steps(config, n_train)
    if steps > MAX_STEPS:
        raise CenterLossError(f"epochs = {config.epochs}: {steps:,} steps of {config.batch_size} images, more than "
                              f"the {MAX_STEPS:,} any run can finish; give fewer")
    need, free = config.batch_size * BYTES_PER_IMAGE, free_memory(device)
    if free is not None and need > free:
        raise CenterLossError(f"batch_size = {config.batch_size}: a step needs about {need / 2**30:.1f} GiB, and "
                              f"{device} has {free / 2**30:.1f} GiB free; give a smaller batch size")
    left = address_space_left() if device.type == "cpu" else None
    if left is not None and need > left:
        raise CenterLossError(f"batch_size = {config.batch_size}: a step needs about {need / 2**30:.1f} GiB, and this "
                              f"process may map only {left / 2**30:.1f} GiB more (its limit, ulimit -v); give a "
                              "smaller batch size, or raise the limit")


def address_space_left() -> int | None:
    """Bytes this process may still map under its own limit (RLIMIT_AS, `ulimit -v`); None without one."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status", encoding="utf-8") as f:  # closed here: train() left one open per call
            status = dict(line.split(":", 1) for line in f)
        mapped = int(status["VmSize"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    return max(0, soft - mapped)


def free_memory(device: torch.device) -> int | None:
    """Bytes free for training on `device`; None where the system does not say."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu" and hasattr(os, "sysconf") and "SC_AVPHYS_PAGES" in os.sysconf_names:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") + _reclaimable()
    return None


def _reclaimable() -> int:
    """The page cache the kernel gives back on demand (MemAvailable - MemFree), on Linux."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            info = dict(line.split(":", 1) for line in f)
        return max(0, int(info["MemAvailable"].split()[0]) - int(info["MemFree"].split()[0])) * 1024
    except (OSError, KeyError, ValueError):
        return 0
