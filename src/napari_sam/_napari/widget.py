"""`SamWidget`: the "Segment Anything" dock widget and its scripting interface.

>>> import napari, napari_sam                                    # doctest: +SKIP
>>> viewer = napari.Viewer()
>>> widget = napari_sam.SamWidget(viewer)
>>> viewer.window.add_dock_widget(widget, name="Segment Anything")
>>> widget.points_layer.add([120, 80])          # a positive click, as with the mouse
>>> widget.commit()                             # -> the new label ID, e.g. 1001

This module composes the parts: behaviour is in :mod:`.workflow`, prompt layers in
:mod:`.prompts`, the target layer in :mod:`.labels_target`, the model in :mod:`.model_picker`,
the engine adapter in :mod:`.session`, background work in :mod:`.tasks`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error
from qtpy.QtCore import QEvent, Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

from napari_sam._napari.class_table import ClassTable
from napari_sam._napari.controls import KEYS, Panels
from napari_sam._napari.labels_target import LabelsTarget, is_target_candidate
from napari_sam._napari.model_picker import ModelPicker
from napari_sam._napari.prompts import PromptLayers, is_prompt_layer
from napari_sam._napari.session import EngineState, ImageSpec, Index
from napari_sam._napari.tasks import TaskRunner
from napari_sam._napari.workflow import LONG_KINDS, Workflow
from napari_sam.labels import LabelScheme, Mode

if TYPE_CHECKING:  # pragma: no cover
    import napari
    import napari.viewer


def is_image_candidate(layer: Any) -> bool:
    return isinstance(layer, Image) and not is_prompt_layer(layer)


class SamWidget(QWidget):
    """Segment Anything in napari: click, box, propagate, segment everything, commit with undo.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer to work in. The active image layer (else the first) is picked.

    Attributes
    ----------
    image_layer, labels_layer, model_name, selected_class, negative_mode : settable
    points_layer, boxes_layer, preview_layer : the prompt layers of the current image
    """

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = getattr(viewer, "__wrapped__", viewer)  # napari hands plugins a proxy
        self.runner = TaskRunner(self)
        self.engine = EngineState()
        self.prompts: PromptLayers | None = None
        self.spec: ImageSpec | None = None
        self._image: Image | None = None
        self._docked = False
        self._closed = False
        self.flow = Workflow(self)
        inner = QWidget()
        self.panels = Panels(inner, self.viewer, is_image_candidate, is_target_candidate)
        scroll = QScrollArea()
        scroll.setWidget(inner)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.class_table = ClassTable()
        self.panels.classes_layout.addWidget(self.class_table)
        self._scroll = scroll
        self.target = LabelsTarget(
            self.viewer, self.panels.target, self.class_table,
            lambda: None if self.spec is None else self.spec.labels_shape,
        )
        self.models = ModelPicker(
            self, self.panels.model, self.panels.model_info, self.engine, self.runner,
            before_change=self._before_model_change, after_load=self._after_model_load,
        )
        self.models.default()
        self._show_recommended_thresholds()
        self._connect()
        active = self.viewer.layers.selection.active
        self._set_image(active if is_image_candidate(active) else self.panels.image.layer)

    def _show_recommended_thresholds(self) -> None:
        """Show the chosen model's recommended segment-everything thresholds (from its name:
        the default model is only loaded when first needed)."""
        from napari_sam.segment import EverythingParams
        from napari_sam.weights import recommended_everything

        ev = EverythingParams(**recommended_everything(self.engine.model_name))
        self.panels.pred_iou.setValue(ev.pred_iou_thresh)
        self.panels.stability.setValue(ev.stability_score_thresh)

    def _after_model_load(self) -> None:
        """A model picked in the combo box has loaded: its thresholds, then the previews."""
        self._show_recommended_thresholds()
        self.flow.prompts_changed()

    # -- wiring ------------------------------------------------------------------------------
    def _connect(self) -> None:
        p = self.panels
        p.model.activated.connect(self._guard(self.models.chosen, pass_args=True))
        p.image.layer_changed.connect(self._guard(self._set_image, pass_args=True))
        p.channel_axis.activated.connect(lambda _: self._set_image(self._image, force=True))
        p.target.layer_changed.connect(self._guard(self.target.chosen, pass_args=True))
        p.negative.toggled.connect(self._set_negative)
        p.commit.clicked.connect(self._guard(self.commit))
        p.clear.clicked.connect(self._guard(self.clear_prompts))
        p.undo.clicked.connect(self._guard(self.undo))
        p.refine.clicked.connect(self._guard(self.refine))
        p.propagate.clicked.connect(self._guard(self.propagate))
        p.precompute.clicked.connect(self._guard(self.precompute))
        p.everything.clicked.connect(
            self._guard(lambda: self.segment_everything(p.everything_scope.currentIndex() == 1))
        )
        p.cancel.clicked.connect(self.cancel)
        self.runner.progress.connect(self._progress)
        self.runner.activity.connect(self._activity)
        self.runner.message.connect(self.set_status)
        self.viewer.layers.events.removed.connect(self._layer_removed)
        self.viewer.dims.events.current_step.connect(self._slice_changed)

    def _guard(self, func: Any, pass_args: bool = False) -> Any:
        """For buttons, keys and pickers: show user errors instead of raising them into Qt.

        ``pass_args``: hand the signal's arguments on (pickers); buttons drop theirs.
        """

        def run(*args: Any) -> None:
            try:
                func(*args) if pass_args else func()
            except (ValueError, TypeError, RuntimeError) as exc:
                self.report_error(exc)

        return run

    def report_error(self, exc: BaseException) -> None:
        self.set_status(f"error: {exc}")
        show_error(f"napari-sam: {exc}")

    def set_status(self, text: str) -> None:
        self.panels.status.setText(text)

    def _key_bindings(self) -> dict[str, Any]:
        return {
            KEYS["commit"]: lambda _layer: self._guard(self.commit)(),
            KEYS["clear"]: lambda _layer: self._guard(self.clear_prompts)(),
            KEYS["negative"]: lambda _layer: setattr(self, "negative_mode", not self.negative_mode),
            KEYS["propagate"]: lambda _layer: self._guard(self.propagate)(),
        }

    # -- image and prompt layers -------------------------------------------------------------
    @property
    def image_layer(self) -> Image | None:
        """The image being segmented (settable to any Image layer of the viewer)."""
        return self._image

    @image_layer.setter
    def image_layer(self, layer: Image | None) -> None:
        if layer is not None and (not is_image_candidate(layer) or layer not in self.viewer.layers):
            raise TypeError(f"image_layer must be an Image layer of this viewer, got {layer!r}")
        self._set_image(layer)

    def _set_image(self, layer: Image | None, force: bool = False) -> None:
        if (layer is self._image and not force) or self._closed:
            return
        self.runner.cancel()
        self.flow.reset()
        if self.prompts is not None:
            self.prompts.remove()
            self.prompts = None
        if layer is not self._image:
            self._fill_channel_axes(layer)
        self._image = layer
        if layer is None:
            self.spec = None
            self.engine.configure(image=None)
            self.set_status("choose an image layer")
            return
        self.panels.image.set_layer(layer)
        data = layer.data[0] if layer.multiscale else layer.data
        axis = self.panels.channel_axis.currentData()
        self.spec = ImageSpec(data, rgb=bool(layer.rgb), channel_axis=axis, name=layer.name)
        self.engine.configure(image=self.spec)
        self.prompts = PromptLayers(self.viewer, layer, self.spec, self.flow.prompts_changed)
        self.prompts.bind(self._key_bindings())
        self.prompts.ensure()
        self.prompts.negative = self.panels.negative.isChecked()
        self.viewer.layers.selection.active = self.prompts.points
        self._fill_z_range(self.spec.index_shape)
        if self.target.layer is not None and self.target.layer.data.shape != self.spec.labels_shape:
            self.target.set(None)
        self.set_status(f"{layer.name}: click an object (points layer selected)")
        self.flow.idle.start()

    def _fill_channel_axes(self, layer: Image | None) -> None:
        box = self.panels.channel_axis
        box.clear()
        box.addItem("none", None)
        if layer is not None:
            for axis in ImageSpec.channel_axis_choices(layer.data.shape, bool(layer.rgb)):
                box.addItem(f"{axis} ({layer.data.shape[axis]})", axis)

    def _fill_z_range(self, index_shape: tuple[int, ...]) -> None:
        p = self.panels
        p.stack_box.setEnabled(bool(index_shape))
        top = max(0, (index_shape[-1] if index_shape else 1) - 1)
        for box in (p.z_start, p.z_stop):
            box.setRange(0, top)
        p.z_start.setValue(0)
        p.z_stop.setValue(top)

    def _ensure_prompts(self) -> PromptLayers:
        if self.prompts is None:
            raise ValueError("choose an image layer first")
        self.prompts.ensure()
        return self.prompts

    @property
    def points_layer(self) -> Any:
        """The Points layer of clicks (feature ``"positive"``: polarity); re-created if deleted."""
        return self._ensure_prompts().points

    @property
    def boxes_layer(self) -> Any:
        """The Shapes layer of boxes (draw rectangles); re-created if deleted."""
        return self._ensure_prompts().boxes

    @property
    def preview_layer(self) -> Any:
        """The Labels layer showing the current object (value 1) before it is committed."""
        return self._ensure_prompts().preview

    def _layer_removed(self, event: Any) -> None:
        layer = event.value
        self.target.removed(layer)
        if self.prompts is not None and layer in (self.prompts.points, self.prompts.boxes):
            self.flow.prompts_changed()  # its prompts are gone

    # -- target labels -----------------------------------------------------------------------
    @property
    def labels_layer(self) -> Labels | None:
        """The target Labels layer; None until the first commit when "new" is chosen."""
        return self.target.layer

    @labels_layer.setter
    def labels_layer(self, layer: Labels | None) -> None:
        self.target.set(layer)

    def ensure_labels_layer(self) -> Labels:
        """The target layer, created (with the class table's scheme) if "new" is chosen."""
        if self.spec is None or self._image is None:
            raise ValueError("choose an image layer first")
        return self.target.ensure(self._image, self.spec.labels_shape, self.spec.channel_axis)

    @property
    def scheme(self) -> LabelScheme:
        """The label scheme of the target layer (or of the layer "new" will create)."""
        return self.target.scheme

    def labels_written(self, layer: Labels, ids: tuple[int, ...]) -> None:
        self.target.written(ids)

    # -- settings ----------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        """Registry name or checkpoint path of the model (settable; loads in the background)."""
        return str(self.models.name)

    @model_name.setter
    def model_name(self, name: str | Path) -> None:
        self.models.set(str(name))

    def _before_model_change(self) -> None:
        self.runner.cancel()
        self.flow.reset()

    @property
    def write_mode(self) -> Mode:
        """How commits treat existing objects: "keep" (default), "same_class" or "replace"."""
        mode = self.panels.mode.currentText()
        return "replace" if mode == "replace" else "same_class" if mode == "same_class" else "keep"

    @property
    def selected_class(self) -> int | None:
        """Class ID given to committed objects (None for plain labels)."""
        return self.class_table.selected_class

    @selected_class.setter
    def selected_class(self, class_id: int | None) -> None:
        self.class_table.selected_class = class_id

    @property
    def negative_mode(self) -> bool:
        """True: new points are negative (background) clicks. Key N toggles it."""
        return self.panels.negative.isChecked()

    @negative_mode.setter
    def negative_mode(self, value: bool) -> None:
        self.panels.negative.setChecked(bool(value))

    def _set_negative(self, value: bool) -> None:
        if self.prompts is not None:
            self.prompts.negative = value

    def current_index(self) -> Index:
        """The slice shown: one int per leading (non-channel) axis of the image; () for 2D."""
        if self._image is None or self.spec is None or not self.spec.lead_axes:
            return ()
        point = self._image.world_to_data(self.viewer.dims.point)
        shape = self.spec.data.shape
        return tuple(int(np.clip(round(float(point[a])), 0, shape[a] - 1)) for a in self.spec.lead_axes)

    def _slice_changed(self, event: Any = None) -> None:
        self.runner.cancel("prefetch")
        self.flow.idle.start()

    # -- actions (the scripting contract) ----------------------------------------------------
    def commit(self) -> int | None:
        """Write the preview into ``labels_layer`` as one object (undo: ``labels_layer.undo()``).

        Waits for pending previews first. Returns the label ID written, or None if the
        preview is empty.
        """
        return self.flow.commit()

    def clear_prompts(self) -> None:
        """Remove all points, boxes and the preview."""
        self.flow.clear()

    def undo(self) -> None:
        """Undo the last change of ``labels_layer`` (a commit, or a brush stroke)."""
        if self.target.layer is not None:
            self.target.layer.undo()

    def refine(self) -> None:
        """Refine ``labels_layer.selected_label`` on this slice: it becomes the preview; clicks
        correct it; ``commit()`` writes it back under the same ID."""
        self.flow.refine()

    def propagate(self) -> None:
        """Follow the preview object through z (background; ``wait()`` to block)."""
        self.flow.propagate()

    def segment_everything(self, whole_stack: bool = False) -> None:
        """Add every object of this slice (or of the whole stack) to ``labels_layer`` as new
        objects of ``selected_class`` (background; ``wait()`` to block)."""
        self.flow.segment_everything(bool(whole_stack))

    def precompute(self) -> None:
        """Encode every slice in the background (current slice first)."""
        self.flow.precompute()

    def cancel(self) -> None:
        """Cancel running long jobs (model download, precompute, propagate, everything)."""
        for kind in LONG_KINDS:
            self.runner.cancel(kind)
        self.set_status("cancelled")

    def wait(self, timeout: float = 300.0) -> None:
        """Block (processing Qt events) until previews and background jobs are done.

        For scripts and tests. Raises TimeoutError after ``timeout`` seconds.
        """
        if self.flow.debounce.isActive():
            self.flow.debounce.stop()
            self.flow.decode_changed()
        self.runner.wait(timeout, busy=lambda: self.runner.busy() or self.flow.debounce.isActive())

    # -- closing -----------------------------------------------------------------------------
    def close_session(self) -> None:
        """Cancel all work, remove the prompt layers and stop listening to the viewer."""
        if self._closed:
            return
        self._closed = True
        self.runner.close()
        self.flow.debounce.stop()
        self.flow.idle.stop()
        self.viewer.layers.events.removed.disconnect(self._layer_removed)
        self.viewer.dims.events.current_step.disconnect(self._slice_changed)
        self.panels.image.disconnect_viewer()
        self.panels.target.disconnect_viewer()
        if self.prompts is not None:
            self.prompts.remove()
            self.prompts = None
        try:
            self.runner.wait(timeout=30.0)
        except TimeoutError:
            self.set_status("closing: background work still running")

    def event(self, event: QEvent | None) -> bool:
        # napari takes a closed dock widget out of its dock (parent -> None) without closing it
        if event is not None and event.type() == QEvent.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self.close_session()
        return super().event(event)

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        # size the dock to the (now styled) controls, so nothing is cut off at the right
        inner, bar = self._scroll.widget(), self._scroll.verticalScrollBar()
        if inner is not None and bar is not None:
            self._scroll.setMinimumWidth(min(inner.sizeHint().width() + bar.sizeHint().width(), 560))
        super().showEvent(event)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt's name)
        self.close_session()
        super().closeEvent(event)

    # -- progress ----------------------------------------------------------------------------
    def _progress(self, kind: str, label: str, done: int, total: int) -> None:
        if kind in LONG_KINDS:
            bar = self.panels.progress
            bar.setRange(0, max(total, 1))
            bar.setValue(done)
            bar.setFormat(f"{label}: %v/%m")

    def _activity(self) -> None:
        running = [t for t in self.runner.running() if t.kind in LONG_KINDS and not t.cancel.is_set()]
        bar = self.panels.progress
        if running and bar.isHidden():
            bar.setRange(0, 0)  # busy until the first progress report
            self.set_status(f"{running[-1].label}…")
        bar.setVisible(bool(running))
        self.panels.cancel.setVisible(bool(running))
