"""Device and precision choice: explicit > environment > automatic, and clear errors."""

from __future__ import annotations

import pytest
import torch

from napari_sam import devices
from napari_sam.devices import (
    DeviceError,
    autocast_for,
    available_devices,
    resolve_device,
    resolve_precision,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(devices.DEVICE_ENV, raising=False)
    monkeypatch.delenv(devices.PRECISION_ENV, raising=False)


def test_auto_device_is_the_best_available() -> None:
    assert resolve_device().type == available_devices()[0]
    assert resolve_device("auto") == resolve_device(None)
    assert available_devices()[-1] == "cpu"


def test_explicit_device_and_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setenv(devices.DEVICE_ENV, "cpu")
    assert resolve_device() == torch.device("cpu")
    monkeypatch.setenv(devices.DEVICE_ENV, "CPU ")
    assert resolve_device(None) == torch.device("cpu")


def test_explicit_device_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(devices.DEVICE_ENV, "not-a-device")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu0", "tpu", "cuda:x", "nonsense"])
def test_invalid_device_names_are_refused(name: str) -> None:
    with pytest.raises(DeviceError, match="device"):
        resolve_device(name)


def test_invalid_env_device_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(devices.DEVICE_ENV, "gpu0")
    with pytest.raises(DeviceError, match=devices.DEVICE_ENV):
        resolve_device()


def test_unsupported_device_type_is_refused() -> None:
    with pytest.raises(DeviceError, match="not supported"):
        resolve_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(DeviceError, match="CUDA"):
        resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_out_of_range() -> None:
    with pytest.raises(DeviceError, match="only"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_precision_explicit_and_aliases() -> None:
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("BF16", "cpu") == "bf16"
    assert resolve_precision("float32", "cpu") == "fp32"
    assert resolve_precision("bfloat16", "cpu") == "bf16"


def test_precision_env_override_and_explicit_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(devices.PRECISION_ENV, "fp32")
    assert resolve_precision(None, "cpu") == "fp32"
    monkeypatch.setenv(devices.PRECISION_ENV, "bf16")
    assert resolve_precision(None, "cpu") == "bf16"
    assert resolve_precision("fp32", "cpu") == "fp32"


def test_invalid_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DeviceError, match="not a precision"):
        resolve_precision("int8", "cpu")
    monkeypatch.setenv(devices.PRECISION_ENV, "fp64")
    with pytest.raises(DeviceError, match=devices.PRECISION_ENV):
        resolve_precision(None, "cpu")


def test_fp16_refused_on_cpu() -> None:
    with pytest.raises(DeviceError, match="fp16"):
        resolve_precision("fp16", "cpu")


@pytest.mark.parametrize("fast_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_cpu_follows_bf16_support(
    monkeypatch: pytest.MonkeyPatch, fast_bf16: bool, expected: str
) -> None:
    monkeypatch.setattr(devices, "_cpu_has_fast_bf16", lambda: fast_bf16)
    assert resolve_precision(None, "cpu") == expected
    assert resolve_precision("auto", "cpu") == expected


@pytest.mark.parametrize("supported, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_cuda_follows_bf16_support(
    monkeypatch: pytest.MonkeyPatch, supported: bool, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    assert devices._auto_precision(torch.device("cuda")) == expected


def test_auto_precision_on_mps_is_fp32() -> None:
    assert devices._auto_precision(torch.device("mps")) == "fp32"


def test_cpu_bf16_probe_matches_torch() -> None:
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if probe is not None and probe():
        assert devices._cpu_has_fast_bf16()


def test_autocast_for_changes_matmul_dtype() -> None:
    a = torch.randn(8, 8)
    with autocast_for("fp32", "cpu"):
        assert (a @ a).dtype == torch.float32
    with autocast_for(None, torch.device("cpu")):
        assert (a @ a).dtype == torch.float32
    with autocast_for("bf16", "cpu"):
        assert (a @ a).dtype == torch.bfloat16
    assert (a @ a).dtype == torch.float32


def test_autocast_for_rejects_unknown_precision() -> None:
    with pytest.raises(DeviceError), autocast_for("fp8", "cpu"):
        pass
