"""Choosing the torch device and the numeric precision a model runs in.

Order of preference, for both: an explicit argument, then an environment variable
(``NAPARI_SAM_DEVICE``, ``NAPARI_SAM_PRECISION``), then an automatic choice.

Automatic device: cuda > mps > cpu.

Automatic precision (weights stay float32; inference runs under :func:`autocast_for`):

- CUDA: bf16 where the GPU supports it (Ampere and newer), else fp32.
- CPU: bf16 only where the CPU has native bf16 instructions (AVX512-BF16 or AMX), where
  bf16 autocast is measured faster (about 2x for a ViT-B-sized matmul); else fp32.
- MPS: fp32 (fp16 and bf16 can be asked for explicitly).

fp16 is never chosen automatically and is refused on the CPU, whose fp16 kernels are slow
and incomplete.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Literal

import torch

__all__ = [
    "DEVICE_ENV",
    "PRECISION_ENV",
    "PRECISIONS",
    "DeviceError",
    "Precision",
    "autocast_for",
    "available_devices",
    "resolve_device",
    "resolve_precision",
    "torch_dtype",
]

DEVICE_ENV = "NAPARI_SAM_DEVICE"
PRECISION_ENV = "NAPARI_SAM_PRECISION"

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_DEVICE_TYPES = ("cpu", "cuda", "mps")


class DeviceError(ValueError):
    """A device or precision was asked for that does not exist or is not usable here."""


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    """Device types usable on this machine, best first (e.g. ``["cuda", "cpu"]``)."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if _mps_available():
        found.append("mps")
    found.append("cpu")
    return found


def _parse_device(value: str | torch.device, source: str) -> torch.device:
    if isinstance(value, torch.device):
        device = value
    else:
        text = str(value).strip().lower()
        try:
            device = torch.device(text)
        except RuntimeError as exc:
            raise DeviceError(
                f"{source} {value!r} is not a device name; use one of 'auto', 'cpu', 'cuda', "
                f"'cuda:<index>' or 'mps' (usable here: {', '.join(available_devices())})"
            ) from exc
    if device.type not in _DEVICE_TYPES:
        raise DeviceError(
            f"{source} {value!r}: device type {device.type!r} is not supported; use 'cpu', "
            f"'cuda' or 'mps' (usable here: {', '.join(available_devices())})"
        )
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"{source} {value!r} asks for CUDA, but this torch build sees no CUDA GPU "
                f"(torch {torch.__version__}); use 'cpu' or install a CUDA build of torch"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(
                f"{source} {value!r}: there are only {count} CUDA device(s) (indices 0..{count - 1})"
            )
    if device.type == "mps" and not _mps_available():
        raise DeviceError(
            f"{source} {value!r} asks for Apple MPS, which is not available here; use 'cpu'"
        )
    return device


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device to run on.

    Parameters
    ----------
    device
        ``None`` or ``"auto"``: the environment variable ``NAPARI_SAM_DEVICE`` if set, else
        the best available (cuda > mps > cpu). Otherwise a device name (``"cpu"``,
        ``"cuda"``, ``"cuda:1"``, ``"mps"``) or a :class:`torch.device`.

    Raises
    ------
    DeviceError
        If the name is not a device, or the device is not available on this machine.
    """
    source = "device"
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        env = os.environ.get(DEVICE_ENV, "").strip()
        if env and env.lower() != "auto":
            device, source = env, f"environment variable {DEVICE_ENV}="
        else:
            return torch.device(available_devices()[0])
    return _parse_device(device, source)


def _cpu_has_fast_bf16() -> bool:
    """True if the CPU has native bf16 matmul instructions (AVX512-BF16 or AMX)."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(cpu, probe, None)
        if check is not None:
            with contextlib.suppress(RuntimeError):
                if check():
                    return True
    return False


def _auto_precision(device: torch.device) -> Precision:
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if _cpu_has_fast_bf16() else "fp32"
    return "fp32"


def resolve_precision(
    precision: str | None = None, device: str | torch.device | None = None
) -> Precision:
    """The precision to run inference in on ``device``.

    Parameters
    ----------
    precision
        ``None`` or ``"auto"``: ``NAPARI_SAM_PRECISION`` if set, else the automatic choice
        described in this module's docstring. Otherwise ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    device
        The device (resolved with :func:`resolve_device`).

    Raises
    ------
    DeviceError
        If the value is not a precision, or fp16 is asked for on the CPU.
    """
    dev = resolve_device(device)
    source = "precision"
    if precision is None or precision.strip().lower() == "auto":
        env = os.environ.get(PRECISION_ENV, "").strip().lower()
        if not env or env == "auto":
            return _auto_precision(dev)
        precision, source = env, f"environment variable {PRECISION_ENV}="
    value = precision.strip().lower()
    aliases = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}
    value = aliases.get(value, value)
    if value not in PRECISIONS:
        raise DeviceError(
            f"{source} {precision!r} is not a precision; use 'auto', 'fp32', 'bf16' or 'fp16'"
        )
    if value == "fp16" and dev.type == "cpu":
        raise DeviceError(
            f"{source} 'fp16' is not supported on the CPU; use 'bf16' or 'fp32' there "
            "(fp16 is for CUDA and MPS devices)"
        )
    return value


def torch_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a precision name (``"bf16"`` -> ``torch.bfloat16``)."""
    if precision not in _DTYPES:
        raise DeviceError(f"{precision!r} is not a precision; use 'fp32', 'bf16' or 'fp16'")
    return _DTYPES[precision]


@contextlib.contextmanager
def autocast_for(
    precision: str | None, device: str | torch.device
) -> Iterator[None]:
    """Context for running a float32 model in ``precision`` on ``device``.

    ``torch.autocast`` for bf16/fp16 (matmuls and convolutions run in the low precision,
    reductions and norms stay float32); nothing for fp32 or ``None``.
    """
    dev = device if isinstance(device, torch.device) else torch.device(device)
    if precision in (None, "fp32"):
        yield
        return
    with torch.autocast(device_type=dev.type, dtype=torch_dtype(precision)):
        yield
