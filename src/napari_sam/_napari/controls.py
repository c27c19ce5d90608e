"""The widget's Qt panels: pickers, status and action buttons. Layout only; no logic."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari

LOAD_FROM_FILE = "Load from file…"
NEW_LAYER = "new labels layer"

KEYS = {
    "commit": "C",
    "clear": "Shift-C",
    "negative": "N",
    "propagate": "Shift-S",
}
KEY_HELP = (
    "Click: positive point · Shift-click: negative point · "
    f"{KEYS['negative']}: toggle negative mode · {KEYS['commit']}: commit · "
    f"{KEYS['clear']}: clear prompts · {KEYS['propagate']}: propagate through z "
    "(keys work while a SAM prompt layer is selected)"
)


class LayerCombo(QComboBox):
    """A combo box of the viewer's layers of one type, kept up to date, with an optional
    first entry (e.g. "new labels layer") that stands for no layer.

    Signals
    -------
    layer_changed(object)
        The chosen layer, or None for the extra entry / no layer.
    """

    layer_changed = Signal(object)

    def __init__(
        self,
        viewer: napari.Viewer,
        accept: Callable[[Any], bool],
        none_text: str | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._accept = accept
        self._none_text = none_text
        self._layers: list[Any] = []
        self._refreshing = False
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.refresh)
        self.currentIndexChanged.connect(self._index_changed)
        self.refresh()

    def disconnect_viewer(self) -> None:
        for event in (self._viewer.layers.events.inserted, self._viewer.layers.events.removed):
            event.disconnect(self.refresh)

    @property
    def layer(self) -> Any:
        i = self.currentIndex() - (1 if self._none_text else 0)
        return self._layers[i] if 0 <= i < len(self._layers) else None

    def set_layer(self, layer: Any) -> None:
        """Select ``layer`` (None: the extra entry); it must be a layer this combo accepts."""
        self.refresh()
        if layer is None:
            self.setCurrentIndex(0 if self._none_text else -1)
            return
        for i, candidate in enumerate(self._layers):
            if candidate is layer:
                self.setCurrentIndex(i + (1 if self._none_text else 0))
                return
        raise ValueError(f"layer {getattr(layer, 'name', layer)!r} cannot be chosen here")

    def refresh(self, event: Any = None) -> None:
        current = self.layer
        self._refreshing = True
        try:
            self._layers = [x for x in self._viewer.layers if self._accept(x)]
            self.clear()
            if self._none_text:
                self.addItem(self._none_text)
            self.addItems([x.name for x in self._layers])
            keep = next((i for i, x in enumerate(self._layers) if x is current), None)
            if keep is not None:
                self.setCurrentIndex(keep + (1 if self._none_text else 0))
            else:
                self.setCurrentIndex(0 if self._none_text or self._layers else -1)
        finally:
            self._refreshing = False
        if self.layer is not current:
            self.layer_changed.emit(self.layer)

    def _index_changed(self, _: int) -> None:
        if not self._refreshing:
            self.layer_changed.emit(self.layer)


def compact(combo: QComboBox, chars: int = 12) -> QComboBox:
    """Let a combo box shrink to ``chars`` characters (long entries are elided), so the dock
    widget stays narrow."""
    combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(chars)
    return combo


def _button(text: str, tip: str) -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(tip)
    return button


class Panels:
    """All controls of the widget, laid out into ``root``; the widget connects them."""

    def __init__(
        self,
        root: QWidget,
        viewer: napari.Viewer,
        image_ok: Callable[[Any], bool],
        labels_ok: Callable[[Any], bool],
    ) -> None:
        # model
        self.model = compact(QComboBox())
        self.model.setToolTip("Registered models (cached ones load offline) or a checkpoint file")
        self.model_info = QLabel("model not loaded")
        # image and target
        self.image = compact(LayerCombo(viewer, image_ok))
        self.channel_axis = compact(QComboBox())
        self.channel_axis.setToolTip("An axis holding channels (1 or 3), if the image has one")
        self.target = compact(LayerCombo(viewer, labels_ok, NEW_LAYER))
        self.mode = compact(QComboBox())
        self.mode.addItems(["keep", "same_class", "replace"])
        self.mode.setToolTip(
            "keep: never overwrite other objects · same_class: overwrite objects of the same "
            "class · replace: overwrite anything"
        )
        # status
        self.status = QLabel("choose an image layer")
        self.status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.cancel = _button("Cancel", "Stop the running background job")
        self.cancel.setVisible(False)
        # object
        self.negative = QCheckBox(f"Negative clicks ({KEYS['negative']})")
        self.negative.setToolTip("New points mark background; Shift-click does this for one point")
        self.commit = _button(
            f"Commit ({KEYS['commit']})", "Write the preview into the labels layer as a new object"
        )
        self.clear = _button(f"Clear ({KEYS['clear']})", "Remove all prompts and the preview")
        self.undo = _button("Undo", "Undo the last change of the labels layer (as Ctrl-Z on it)")
        self.refine = _button(
            "Refine selected label",
            "Use the labels layer's selected label on this slice as the starting mask; correct "
            "it with clicks and commit it back under the same ID",
        )
        # 3D
        self.propagate = _button(
            f"Propagate through z ({KEYS['propagate']})", "Follow the preview object through the stack"
        )
        self.z_start = QSpinBox()
        self.z_stop = QSpinBox()
        for box in (self.z_start, self.z_stop):
            box.setToolTip("Slices to fill (inclusive range)")
        self.stop_iou = QDoubleSpinBox()
        self.stop_iou.setRange(0.0, 1.0)
        self.stop_iou.setSingleStep(0.05)
        self.stop_iou.setValue(0.5)
        self.stop_iou.setToolTip("Stop when SAM's predicted IoU on the next slice falls below this")
        self.max_area_change = QDoubleSpinBox()
        self.max_area_change.setRange(1.0, 100.0)
        self.max_area_change.setValue(2.5)
        self.max_area_change.setToolTip("Stop when the area changes by more than this factor per slice")
        self.precompute = _button("Precompute all slices", "Encode every slice in the background")
        # everything
        self.everything_scope = compact(QComboBox())
        self.everything_scope.addItems(["current slice", "whole stack"])
        self.points_per_side = QSpinBox()
        self.points_per_side.setRange(4, 128)
        self.points_per_side.setValue(32)
        self.pred_iou = QDoubleSpinBox()
        self.pred_iou.setRange(0.0, 1.0)
        self.pred_iou.setSingleStep(0.02)
        self.pred_iou.setValue(0.88)
        self.stability = QDoubleSpinBox()
        self.stability.setRange(0.0, 1.0)
        self.stability.setSingleStep(0.02)
        self.stability.setValue(0.95)
        self.max_area = QDoubleSpinBox()
        self.max_area.setRange(0.01, 1.0)
        self.max_area.setSingleStep(0.05)
        self.max_area.setValue(0.4)
        self.max_area.setToolTip("Drop masks covering more than this fraction of a slice (background)")
        self.everything = _button("Segment everything", "Add every object found to the labels layer")
        self.keys = QLabel(KEY_HELP)
        self.keys.setWordWrap(True)
        self._layout(root)

    def _layout(self, root: QWidget) -> None:
        outer = QVBoxLayout(root)
        setup = QGroupBox("Model and layers")
        form = QFormLayout(setup)
        form.addRow("model", self.model)
        form.addRow("", self.model_info)
        form.addRow("image", self.image)
        form.addRow("channel axis", self.channel_axis)
        form.addRow("labels", self.target)
        form.addRow("overwrite", self.mode)
        outer.addWidget(setup)

        self.classes_box = QGroupBox("Label scheme and classes")
        self.classes_layout = QVBoxLayout(self.classes_box)
        outer.addWidget(self.classes_box)

        obj = QGroupBox("Object")
        col = QVBoxLayout(obj)
        col.addWidget(self.negative)
        row = QHBoxLayout()
        for b in (self.commit, self.clear, self.undo):
            row.addWidget(b)
        col.addLayout(row)
        col.addWidget(self.refine)
        outer.addWidget(obj)

        self.stack_box = QGroupBox("3D")
        form3 = QFormLayout(self.stack_box)
        zrow = QHBoxLayout()
        zrow.addWidget(self.z_start)
        zrow.addWidget(QLabel("to"))
        zrow.addWidget(self.z_stop)
        form3.addRow("slices", zrow)
        form3.addRow("stop below IoU", self.stop_iou)
        form3.addRow("max area change", self.max_area_change)
        form3.addRow(self.propagate)
        form3.addRow(self.precompute)
        outer.addWidget(self.stack_box)

        ev = QGroupBox("Segment everything")
        form_ev = QFormLayout(ev)
        form_ev.addRow("scope", self.everything_scope)
        form_ev.addRow("points per side", self.points_per_side)
        form_ev.addRow("min predicted IoU", self.pred_iou)
        form_ev.addRow("min stability", self.stability)
        form_ev.addRow("max area (fraction)", self.max_area)
        form_ev.addRow(self.everything)
        outer.addWidget(ev)

        status = QGroupBox("Status")
        scol = QVBoxLayout(status)
        scol.addWidget(self.status)
        prow = QHBoxLayout()
        prow.addWidget(self.progress, 1)
        prow.addWidget(self.cancel)
        scol.addLayout(prow)
        scol.addWidget(self.keys)
        outer.addWidget(status)
        outer.addStretch(1)
