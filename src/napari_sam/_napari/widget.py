"""`SamWidget`: the "Segment Anything" dock widget and its scripting interface.

>>> import napari, napari_sam                                    # doctest: +SKIP
>>> viewer = napari.Viewer()
>>> widget = napari_sam.SamWidget(viewer)
>>> viewer.window.add_dock_widget(widget, name="Segment Anything")
>>> widget.points_layer.add([120, 80])          # a positive click, as with the mouse
>>> widget.wait(); widget.commit()              # -> the new label ID

This module wires the parts together; behaviour lives in :mod:`.workflow`, layers in
:mod:`.prompts`, the engine adapter in :mod:`.session`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QFileDialog, QFrame, QScrollArea, QVBoxLayout, QWidget

from napari_sam._napari.class_table import ClassTable, default_scheme
from napari_sam._napari.controls import KEYS, LOAD_FROM_FILE, Panels
from napari_sam._napari.prompts import PromptLayers, is_prompt_layer
from napari_sam._napari.session import EngineState, ImageSpec, Index
from napari_sam._napari.tasks import TaskRunner
from napari_sam._napari.workflow import LONG_KINDS, Workflow
from napari_sam.labels import LabelMetadataError, LabelScheme, colormap_dict, from_metadata, to_metadata

if TYPE_CHECKING:  # pragma: no cover
    import napari
    import napari.viewer


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
        self._labels: Labels | None = None
        self._new_scheme = default_scheme()
        self._known_ids: set[int] = set()
        self.flow = Workflow(self)
        inner = QWidget()
        self.panels = Panels(inner, self.viewer, self._image_ok, self._labels_ok)
        scroll = QScrollArea()
        scroll.setWidget(inner)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.class_table = ClassTable()
        self.panels.classes_box.layout().addWidget(self.class_table)
        self._populate_models()
        self._connect()
        self.engine.configure(model_name=self.panels.model.currentData())
        active = self.viewer.layers.selection.active
        self._set_image(active if self._image_ok(active) else self.panels.image.layer)

    # -- wiring ------------------------------------------------------------------------------
    def _connect(self) -> None:
        p = self.panels
        p.model.activated.connect(self._model_chosen)
        p.image.layer_changed.connect(self._guard(self._set_image, pass_args=True))
        p.channel_axis.activated.connect(lambda _: self._set_image(self._image, force=True))
        p.target.layer_changed.connect(self._guard(self._set_target, pass_args=True))
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
        self.class_table.scheme_changed.connect(self._scheme_edited)
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

    # -- layers ------------------------------------------------------------------------------
    @staticmethod
    def _image_ok(layer: Any) -> bool:
        return isinstance(layer, Image) and not is_prompt_layer(layer)

    def _labels_ok(self, layer: Any) -> bool:
        return isinstance(layer, Labels) and not is_prompt_layer(layer)

    @property
    def image_layer(self) -> Image | None:
        """The image being segmented (settable to any Image layer of the viewer)."""
        return self._image

    @image_layer.setter
    def image_layer(self, layer: Image | None) -> None:
        if layer is not None and (not self._image_ok(layer) or layer not in self.viewer.layers):
            raise TypeError(f"image_layer must be an Image layer of this viewer, got {layer!r}")
        self._set_image(layer)

    def _set_image(self, layer: Image | None, force: bool = False) -> None:
        if layer is self._image and not force:
            return
        self.runner.cancel()
        self.flow.reset()
        if self.prompts is not None:
            self.prompts.remove()
            self.prompts = None
        if layer is not self._image:
            self._fill_channel_axes(layer)
        self._image = layer
        self.panels.image.set_layer(layer) if layer is not None else None
        if layer is None:
            self.spec = None
            self.engine.configure(image=None)
            self.set_status("choose an image layer")
            return
        data = layer.data[0] if layer.multiscale else layer.data
        axis = self.panels.channel_axis.currentData()
        self.spec = ImageSpec(data, rgb=bool(layer.rgb), channel_axis=axis, name=layer.name)
        self.engine.configure(image=self.spec)
        self.prompts = PromptLayers(self.viewer, layer, self.spec, self.flow.prompts_changed)
        self.prompts.bind(self._key_bindings())
        self.prompts.ensure()
        self.prompts.negative = self.panels.negative.isChecked()
        self.viewer.layers.selection.active = self.prompts.points
        stack = self.spec.index_shape
        self.panels.stack_box.setEnabled(bool(stack))
        for box in (self.panels.z_start, self.panels.z_stop):
            box.setRange(0, max(0, (stack[-1] if stack else 1) - 1))
        self.panels.z_start.setValue(0)
        self.panels.z_stop.setValue(self.panels.z_stop.maximum())
        if self._labels is not None and self._labels.data.shape != self.spec.labels_shape:
            self.labels_layer = None
        self.set_status(f"{layer.name}: click an object (points layer selected)")
        self.flow.idle.start()

    def _fill_channel_axes(self, layer: Image | None) -> None:
        box = self.panels.channel_axis
        box.clear()
        box.addItem("none", None)
        if layer is not None and not layer.rgb and layer.ndim >= 3:
            box.addItem("0", 0)

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

    @property
    def labels_layer(self) -> Labels | None:
        """The target Labels layer; None until the first commit when "new" is chosen."""
        return self._labels

    @labels_layer.setter
    def labels_layer(self, layer: Labels | None) -> None:
        if layer is not None:
            if not self._labels_ok(layer) or layer not in self.viewer.layers:
                raise TypeError(f"labels_layer must be a Labels layer of this viewer, got {layer!r}")
            if self.spec is not None and layer.data.shape != self.spec.labels_shape:
                raise ValueError(
                    f"labels layer {layer.name!r} has shape {layer.data.shape}; the image needs "
                    f"{self.spec.labels_shape}"
                )
        self.panels.target.set_layer(layer)
        self._set_target(layer)

    def _set_target(self, layer: Labels | None) -> None:
        if layer is not None and self.spec is not None and layer.data.shape != self.spec.labels_shape:
            self.panels.target.set_layer(self._labels)
            raise ValueError(
                f"labels layer {layer.name!r} has shape {layer.data.shape}, not {self.spec.labels_shape}"
            )
        self._labels = layer
        if layer is None:
            self.class_table.set_scheme(self._new_scheme)
            return
        has_labels = bool(np.any(np.asarray(layer.data)))
        try:
            scheme = from_metadata(layer.metadata)
        except LabelMetadataError:
            scheme = LabelScheme() if has_labels else self.class_table.scheme
        self.class_table.set_scheme(scheme, locked=has_labels)
        self._known_ids = set(int(i) for i in np.unique(np.asarray(layer.data)))
        self._store_scheme()

    def ensure_labels_layer(self) -> Labels:
        """The target layer, created (with the class table's scheme) if "new" is chosen."""
        if self._labels is not None and self._labels in self.viewer.layers:
            return self._labels
        if self.spec is None or self._image is None:
            raise ValueError("choose an image layer first")
        scale = list(self._image.scale)
        translate = list(self._image.translate)
        if self.spec.channel_axis is not None:
            del scale[self.spec.channel_axis], translate[self.spec.channel_axis]
        layer = self.viewer.add_labels(
            np.zeros(self.spec.labels_shape, dtype=np.uint32),
            name=f"{self._image.name} labels",
            scale=scale,
            translate=translate,
            metadata={"napari_sam": to_metadata(self.class_table.scheme)},
        )
        self.labels_layer = layer
        return layer

    @property
    def scheme(self) -> LabelScheme:
        """The label scheme of the target layer (or of the layer "new" will create)."""
        return self.class_table.scheme

    def _scheme_edited(self, scheme: LabelScheme) -> None:
        if self._labels is None:
            self._new_scheme = scheme
        self._store_scheme()

    def _store_scheme(self) -> None:
        if self._labels is None:
            return
        scheme = self.class_table.scheme
        self._labels.metadata = {**self._labels.metadata, "napari_sam": to_metadata(scheme)}
        if scheme.is_panoptic:
            from napari.utils.colormaps import DirectLabelColormap

            colours = colormap_dict(scheme, sorted(self._known_ids))
            self._labels.colormap = DirectLabelColormap(color_dict=colours)

    def labels_written(self, layer: Labels, ids: tuple[int, ...]) -> None:
        """After a commit: colours for the new IDs, lock the scheme, select the new label."""
        self._known_ids.update(ids)
        self.class_table.set_scheme(self.class_table.scheme, locked=True)
        self._store_scheme()
        if ids:
            layer.selected_label = ids[-1]

    def _layer_removed(self, event: Any) -> None:
        layer = event.value
        if layer is self._labels:
            self._labels = None
            self.class_table.set_scheme(self._new_scheme)
        if self.prompts is not None and layer in (self.prompts.points, self.prompts.boxes):
            self.flow.prompts_changed()  # its prompts are gone

    # -- model -------------------------------------------------------------------------------
    def _populate_models(self) -> None:
        from napari_sam.weights import list_models

        box = self.panels.model
        for info in list_models():
            if info.url is None:
                state = "shipped" if info.is_cached else "missing"
            elif info.is_cached:
                state = "cached"
            else:
                size = f", {info.size_bytes / 1e6:.0f} MB" if info.size_bytes else ""
                state = f"download{size}"
            box.addItem(f"{info.name} ({state})", info.name)
        box.addItem(LOAD_FROM_FILE, None)

    @property
    def model_name(self) -> str:
        """Registry name or checkpoint path of the model (settable; loads in the background)."""
        return str(self.engine.model_name)

    @model_name.setter
    def model_name(self, name: str | Path) -> None:
        from napari_sam.weights import REGISTRY, SHIPPED

        name = str(name)
        if name not in REGISTRY and name not in SHIPPED and not Path(name).expanduser().is_file():
            known = ", ".join([*SHIPPED, *REGISTRY])
            raise ValueError(f"unknown model {name!r}: use one of {known} or a checkpoint file path")
        box = self.panels.model
        i = box.findData(name)
        if i < 0:
            box.insertItem(box.count() - 1, Path(name).name, name)
            i = box.findData(name)
        box.setCurrentIndex(i)
        self._load_model(name)

    def _model_chosen(self, index: int) -> None:
        data = self.panels.model.itemData(index)
        if data is None:
            path, _ = QFileDialog.getOpenFileName(
                self, "SAM checkpoint", "", "Checkpoints (*.pt *.pth);;All files (*)"
            )
            if not path:
                self.panels.model.setCurrentIndex(max(0, self.panels.model.findData(self.engine.model_name)))
                return
            data = path
        self._guard(lambda: setattr(self, "model_name", data))()

    def _load_model(self, name: str) -> None:
        self.runner.cancel()
        self.flow.reset()
        token = self.engine.configure(model_name=name)
        self.panels.model_info.setText(f"loading {Path(name).name}…")

        def done(model: Any) -> None:
            self.panels.model_info.setText(f"{model.name} · {model.device} · {model.precision}")
            self.flow.prompts_changed()  # redo the previews with this model

        self.runner.start(
            "model", lambda progress, cancel: self.engine.load_model(token, progress, cancel), done,
            label=f"loading {Path(name).name}",
        )

    # -- simple settings ---------------------------------------------------------------------
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

    # -- actions (the scripting contract) ------------------------------------------------------
    def commit(self) -> int | None:
        """Write the preview into ``labels_layer`` as one object (undo with ``labels_layer.undo()``).

        Waits for pending previews first. Returns the label ID written, or None if the
        preview is empty.
        """
        return self.flow.commit()

    def clear_prompts(self) -> None:
        """Remove all points, boxes and the preview."""
        self.flow.clear()

    def undo(self) -> None:
        """Undo the last change of ``labels_layer`` (a commit, or a brush stroke)."""
        if self._labels is not None:
            self._labels.undo()

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

    def close_session(self) -> None:
        """Cancel all work and disconnect from the viewer (the widget is being closed)."""
        self.runner.close()
        self.flow.debounce.stop()
        self.flow.idle.stop()
        for event, handler in (
            (self.viewer.layers.events.removed, self._layer_removed),
            (self.viewer.dims.events.current_step, self._slice_changed),
        ):
            event.disconnect(handler)
        self.panels.image.disconnect_viewer()
        self.panels.target.disconnect_viewer()
        try:
            self.runner.wait(timeout=30.0)
        except TimeoutError:
            pass

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        self.close_session()
        super().closeEvent(event)

    # -- progress ----------------------------------------------------------------------------
    def _progress(self, kind: str, label: str, done: int, total: int) -> None:
        if kind not in LONG_KINDS:
            return
        bar = self.panels.progress
        bar.setVisible(True)
        self.panels.cancel.setVisible(True)
        bar.setMaximum(max(total, 1))
        bar.setValue(done)
        bar.setFormat(f"{label} %v/%m")

    def _activity(self) -> None:
        long_running = [t for t in self.runner.running() if t.kind in LONG_KINDS and not t.cancel.is_set()]
        self.panels.progress.setVisible(bool(long_running))
        self.panels.cancel.setVisible(bool(long_running))
        if long_running:
            task = long_running[-1]
            self.set_status(f"{task.label}…")
            if self.panels.progress.maximum() == 0 or not self.panels.progress.isVisible():
                self.panels.progress.setRange(0, 0)
