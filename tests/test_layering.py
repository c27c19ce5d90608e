"""Architecture rules that users feel: napari starts fast, and the core runs without Qt."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import napari_sam

CORE_PREFIXES = ("napari_sam._napari",)


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_import_is_cheap() -> None:
    """`import napari_sam` (what napari does at start-up) loads neither torch nor Qt."""
    loaded = _run(
        "import sys, napari_sam; "
        "print(','.join(m for m in ('torch', 'qtpy', 'PyQt5', 'PySide6', 'napari') if m in sys.modules))"
    )
    assert loaded == ""


def test_core_modules_import_no_qt_or_napari() -> None:
    core = [
        m.name
        for m in pkgutil.walk_packages(napari_sam.__path__, "napari_sam.")
        if not m.name.startswith(CORE_PREFIXES)
    ]
    assert "napari_sam.predictor" in core and "napari_sam.model.image_encoder" in core
    code = (
        "import importlib, sys\n"
        f"for name in {core!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = [m for m in ('qtpy', 'PyQt5', 'PySide2', 'PySide6', 'napari', 'magicgui.widgets') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    assert _run(code) == ""
