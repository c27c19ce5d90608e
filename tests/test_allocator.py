"""napari_sam._allocator: glibc malloc tuning for the encoder, lazy and with an opt-out."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from napari_sam import _allocator

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_allocator, "_state", None)
    for name in (_allocator.ALLOCATOR_ENV, "LD_PRELOAD", "GLIBC_TUNABLES", *_allocator._USER_TUNING):
        monkeypatch.delenv(name, raising=False)


def test_opt_out(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_allocator.ALLOCATOR_ENV, "default")
    assert _allocator.tune_allocator() == "disabled by NAPARI_SAM_MALLOC"
    assert _allocator.allocator_state() == "disabled by NAPARI_SAM_MALLOC"


def test_user_settings_are_respected(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "0")
    assert _allocator.tune_allocator() == "malloc already tuned through the environment"


def test_other_allocator_left_alone(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")
    assert _allocator.tune_allocator() == "another allocator is preloaded"


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_tunes_once(fresh: None) -> None:
    assert _allocator.tune_allocator() == "tuned"
    assert _allocator.tune_allocator() == "tuned"


def test_not_applied_at_import() -> None:
    code = "import napari_sam, napari_sam.predictor as p; from napari_sam import _allocator as a; print(a.allocator_state())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"
