"""The model picker: registry models (cached or to download), "Load from file…", loading in a
worker with progress and cancel, and the device / precision line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QComboBox, QFileDialog, QLabel, QWidget

from napari_sam._napari.controls import LOAD_FROM_FILE
from napari_sam._napari.session import EngineState
from napari_sam._napari.tasks import TaskRunner


def model_entries() -> list[tuple[str, str]]:
    """``[(text, name)]`` for the registry: "vit_b (download, 375 MB)", "tiny-synth (shipped)"."""
    from napari_sam.weights import list_models

    out = []
    for info in list_models():
        if info.url is None:
            state = "shipped" if info.is_cached else "missing"
        elif info.is_cached:
            state = "cached"
        else:
            state = "download" + (f", {info.size_bytes / 1e6:.0f} MB" if info.size_bytes else "")
        out.append((f"{info.name} ({state})", info.name))
    return out


def check_model_name(name: str) -> str:
    """``name`` if it is a registered model or an existing file; ValueError otherwise."""
    from napari_sam.weights import REGISTRY, SHIPPED

    if name in REGISTRY or name in SHIPPED or Path(name).expanduser().is_file():
        return name
    known = ", ".join([*SHIPPED, *REGISTRY])
    raise ValueError(f"unknown model {name!r}: use one of {known} or the path of a checkpoint file")


class ModelPicker:
    """Drives the model combo box and loads the chosen model through ``engine``.

    Parameters
    ----------
    parent : QWidget
        For the file dialog.
    combo, info : the model combo box and the line under it
    engine : EngineState
    runner : TaskRunner
    before_change : callable
        Called before the model changes (the widget cancels and resets its work).
    after_load : callable
        Called on the UI thread once the model is loaded (the widget redoes its previews).
    """

    def __init__(
        self,
        parent: QWidget,
        combo: QComboBox,
        info: QLabel,
        engine: EngineState,
        runner: TaskRunner,
        before_change: Callable[[], None],
        after_load: Callable[[], None],
    ) -> None:
        self.parent = parent
        self.combo = combo
        self.info = info
        self.engine = engine
        self.runner = runner
        self.before_change = before_change
        self.after_load = after_load
        for text, name in model_entries():
            combo.addItem(text, name)
        combo.addItem(LOAD_FROM_FILE, None)

    @property
    def name(self) -> str | None:
        return self.engine.model_name

    def default(self) -> None:
        """Use the first entry (the shipped model) without loading it yet."""
        self.engine.configure(model_name=self.combo.itemData(0))

    def set(self, name: str) -> None:
        """Select ``name`` (a registry name or a path) and start loading it."""
        name = check_model_name(str(name))
        i = self.combo.findData(name)
        if i < 0:
            self.combo.insertItem(self.combo.count() - 1, Path(name).name, name)
            i = self.combo.findData(name)
        self.combo.setCurrentIndex(i)
        self._load(name)

    def chosen(self, index: int) -> None:
        """The user picked entry ``index``; "Load from file…" opens a file dialog."""
        name = self.combo.itemData(index)
        if name is None:
            path, _ = QFileDialog.getOpenFileName(
                self.parent, "SAM checkpoint", "", "Checkpoints (*.pt *.pth);;All files (*)"
            )
            if not path:
                self.combo.setCurrentIndex(max(0, self.combo.findData(self.engine.model_name)))
                return
            name = path
        self.set(name)

    def _load(self, name: str) -> None:
        self.before_change()
        token = self.engine.configure(model_name=name)
        label = f"loading {Path(name).name}"
        self.info.setText(label + "…")

        def work(progress: Any, cancel: Any) -> Any:
            return self.engine.load_model(token, progress, cancel)

        def done(model: Any) -> None:
            self.info.setText(f"{model.name} · {model.device} · {model.precision}")
            self.after_load()

        def failed(exc: BaseException) -> None:
            self.info.setText(f"not loaded: {exc}")
            from napari.utils.notifications import show_error

            show_error(f"napari-sam: {exc}")

        self.runner.start("model", work, done, label=label, on_error=failed)
