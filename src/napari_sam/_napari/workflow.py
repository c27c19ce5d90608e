"""What the widget does with the engine: decode on prompt changes, commit, refine, propagate,
segment everything, precompute, prefetch. All model work runs in thread workers
(:class:`TaskRunner`); results are applied on the UI thread only if still current."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_info
from qtpy.QtCore import QTimer

from napari_sam._napari.commit import CommitPlan, apply_plans, plan_instances, plan_object
from napari_sam._napari.session import Index, neighbours

if TYPE_CHECKING:  # pragma: no cover
    from napari_sam._napari.prompts import SlicePrompt
    from napari_sam._napari.widget import SamWidget

DEBOUNCE_MS = 40
IDLE_PREFETCH_MS = 300
PREFETCH_RADIUS = 2
LONG_KINDS = ("model", "precompute", "propagate", "everything")


def _where(index: Index) -> str:
    return "the image" if not index else "slice " + ",".join(str(i) for i in index)


class Workflow:
    """The widget's behaviour; ``owner`` is the :class:`SamWidget` (layers, settings, status)."""

    def __init__(self, owner: SamWidget) -> None:
        self.w = owner
        self.decoded: dict[Index, Any] = {}  # slice -> prompt key last sent to the engine
        self.mask_inputs: dict[Index, np.ndarray] = {}  # slice -> mask of the label refined
        self.refine_label: int | None = None
        self._committing = False
        self.debounce = QTimer(owner)
        self.debounce.setSingleShot(True)
        self.debounce.setInterval(DEBOUNCE_MS)
        self.debounce.timeout.connect(self.decode_changed)
        self.idle = QTimer(owner)
        self.idle.setSingleShot(True)
        self.idle.setInterval(IDLE_PREFETCH_MS)
        self.idle.timeout.connect(self.prefetch)

    # -- state -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget decoded prompts and refine state (new image or model)."""
        self.decoded.clear()
        self.mask_inputs.clear()
        self.refine_label = None
        self.debounce.stop()

    def prompts_changed(self) -> None:
        self.debounce.start()

    def flush(self) -> None:
        """Start pending decodes now and wait for them (for commit and scripts)."""
        if self.debounce.isActive():
            self.debounce.stop()
            self.decode_changed()
        runner = self.w.runner
        runner.wait(busy=lambda: any(t.kind.startswith("decode") for t in runner.running()))

    # -- decoding ----------------------------------------------------------------------------
    def decode_changed(self) -> None:
        """Decode every slice whose prompts differ from what was last decoded."""
        prompts = self.w.prompts
        if prompts is None:
            return
        current = prompts.current()
        for idx in sorted(set(current) | set(self.decoded) | set(self.mask_inputs)):
            prompt = current.get(idx)
            mask_input = self.mask_inputs.get(idx)
            key = (None if prompt is None or prompt.empty else prompt.key(), id(mask_input))
            if self.decoded.get(idx) == key:
                continue
            self.decoded[idx] = key
            if prompt is None or prompt.empty:
                self.w.runner.cancel(f"decode{idx}")
                prompts.show_mask(idx, mask_input)  # refine: the label itself until clicked
                continue
            self.start_decode(idx, prompt, mask_input)

    def start_decode(self, idx: Index, prompt: SlicePrompt, mask_input: np.ndarray | None) -> None:
        token = self.w.engine.token
        runner = self.w.runner

        def work(progress: Any, cancel: Any) -> np.ndarray | None:
            session = self.w.engine.session(token)
            if not session.is_ready(idx):
                runner.message.emit(f"encoding {_where(idx)}…")
            session.encode(idx)
            if cancel.is_set():
                return None
            return session.segment(idx, prompt.points, prompt.labels, prompt.box, mask_input)

        def done(mask: np.ndarray | None) -> None:
            if mask is None or token != self.w.engine.token or self.w.prompts is None:
                return
            self.w.prompts.show_mask(idx, mask)
            self.w.set_status(f"{_where(idx)}: preview of {int(mask.sum())} px; commit with C")
            self.idle.start()

        self.w.set_status(f"segmenting on {_where(idx)}…")
        runner.start(f"decode{idx}", work, done, on_error=self._decode_failed(idx))

    def _decode_failed(self, idx: Index) -> Any:
        def fail(exc: BaseException) -> None:
            self.decoded.pop(idx, None)  # retry on the next change
            self.w.report_error(exc)

        return fail

    # -- commit and refine -------------------------------------------------------------------
    def commit(self) -> int | None:
        """Write the preview into the labels layer (one undo step); returns the ID written."""
        if self._committing:  # a second press while the first waits for its preview
            return None
        self._committing = True
        try:
            return self._commit()
        finally:
            self._committing = False

    def _commit(self) -> int | None:
        self.flush()
        prompts = self.w.prompts
        preview = None if prompts is None else prompts.preview_mask()
        if preview is None or not preview.any():
            show_info("napari-sam: nothing to commit; click an object first")
            return None
        layer = self.w.ensure_labels_layer()
        scheme = self.w.scheme
        class_id = self.w.selected_class if scheme.is_panoptic else None
        target = np.asarray(layer.data)
        mode = self.w.write_mode
        lead = preview.reshape(preview.shape[:-2] + (-1,)).any(axis=-1)
        slices = [tuple(int(v) for v in i) for i in np.argwhere(lead)] if lead.ndim else [()]
        plans: list[CommitPlan] = []
        if self.refine_label is not None:
            for idx in slices:
                plans.append(
                    plan_object(target, preview[idx], idx, scheme, class_id, mode, self.refine_label)
                )
        elif len(slices) == 1:
            plans.append(plan_object(target, preview[slices[0]], slices[0], scheme, class_id, mode))
        else:
            plans.append(plan_object(target, preview, (), scheme, class_id, mode))
        apply_plans(layer, plans)
        label_id = plans[0].label_ids[0]
        self.w.labels_written(layer, (label_id,))
        self.clear()
        self.w.set_status(f"committed object {label_id}")
        return label_id

    def clear(self) -> None:
        """Remove prompts, preview and refine state; cancel pending decodes."""
        self.reset()
        for task in self.w.runner.running():
            if task.kind.startswith("decode"):
                self.w.runner.cancel(task.kind)
        if self.w.prompts is not None:
            self.w.prompts.clear()
        self.decoded.clear()

    def refine(self) -> None:
        """Start refining the labels layer's selected label on the current slice."""
        layer = self.w.labels_layer
        if layer is None:
            raise ValueError("choose a labels layer and select the label to refine")
        label = int(layer.selected_label)
        idx = self.w.current_index()
        plane = np.asarray(layer.data[idx] if idx else layer.data) == label
        if label == 0 or not plane.any():
            raise ValueError(
                f"label {label} is not on {_where(idx)}; pick it with the labels layer's picker "
                "(or set labels_layer.selected_label) on this slice"
            )
        self.clear()
        self.refine_label = label
        self.mask_inputs[idx] = plane
        self.decode_changed()
        self.w.set_status(f"refining label {label} on {_where(idx)}: click to correct, then commit")

    # -- long jobs ---------------------------------------------------------------------------
    def propagate(self) -> None:
        """Follow the preview object through z (async; ``wait()`` blocks until done)."""
        self.flush()
        idx = self.w.current_index()
        preview = None if self.w.prompts is None else self.w.prompts.preview_mask()
        if not idx:
            raise ValueError("propagation needs a 3D stack; this image is 2D")
        if preview is None:
            raise ValueError("nothing to propagate: click the object on a slice first")
        lead = idx[:-1]
        column = preview[lead]  # (Z, Y, X) at this time point
        masks = {(*lead, z): column[z] for z in range(column.shape[0]) if column[z].any()}
        if not masks:
            raise ValueError("nothing to propagate: click the object on a slice first")
        p = self.w.panels
        z_range = (p.z_start.value(), p.z_stop.value() + 1)
        stop_iou, area = p.stop_iou.value(), p.max_area_change.value()
        token = self.w.engine.token

        def work(progress: Any, cancel: Any) -> np.ndarray:
            session = self.w.engine.session(token)
            return session.propagate(masks, z_range, stop_iou, area, progress, cancel)

        def done(volume: np.ndarray) -> None:
            if token != self.w.engine.token or self.w.prompts is None:
                return
            self.w.prompts.show_volume(lead, volume)
            filled = np.flatnonzero(volume.reshape(len(volume), -1).any(axis=1))
            span = f"slices {filled[0]}–{filled[-1]}" if filled.size else "no slice"
            self.w.set_status(f"propagated: object on {span}; commit with C")

        self.w.runner.start("propagate", work, done, label="propagating through z")

    def segment_everything(self, whole_stack: bool) -> None:
        """Find every object on this slice (or the whole stack) and add them (async)."""
        idx = self.w.current_index()
        p = self.w.panels
        options = {
            "points_per_side": p.points_per_side.value(),
            "pred_iou_thresh": p.pred_iou.value(),
            "stability_score_thresh": p.stability.value(),
            "max_area_fraction": p.max_area.value(),
        }
        token = self.w.engine.token

        def work(progress: Any, cancel: Any) -> tuple[np.ndarray, Index]:
            session = self.w.engine.session(token)
            return session.segment_everything(idx, whole_stack, progress, cancel, **options)

        def done(result: tuple[np.ndarray, Index]) -> None:
            if token != self.w.engine.token:
                return
            labels, where = result
            layer = self.w.ensure_labels_layer()
            scheme = self.w.scheme
            class_id = self.w.selected_class if scheme.is_panoptic else None
            plan = plan_instances(np.asarray(layer.data), labels, where, scheme, class_id, self.w.write_mode)
            apply_plans(layer, [plan])
            self.w.labels_written(layer, plan.label_ids)
            self.w.set_status(f"segment everything: added {len(plan.label_ids)} objects")

        label = "segmenting everything" + (" in the stack" if whole_stack else f" on {_where(idx)}")
        self.w.runner.start("everything", work, done, label=label)

    def precompute(self) -> None:
        """Encode every slice in the background, the current one first."""
        idx = self.w.current_index()
        token = self.w.engine.token

        def work(progress: Any, cancel: Any) -> int:
            return self.w.engine.session(token).precompute(idx, progress, cancel)

        def done(count: int) -> None:
            self.w.set_status(f"all slices encoded ({count} computed now)")

        self.w.runner.start("precompute", work, done, label="encoding slices")

    def prefetch(self) -> None:
        """While idle, encode the current slice and its neighbours along z."""
        if self.w.image_layer is None:
            return
        if self.w.runner.busy():  # not idle yet (a cancelled prefetch may still be finishing)
            self.idle.start()
            return
        idx = self.w.current_index()
        shape = self.w.spec.index_shape if self.w.spec is not None else ()
        todo = [idx, *neighbours(idx, shape, PREFETCH_RADIUS)]
        token = self.w.engine.token
        runner = self.w.runner

        def work(progress: Any, cancel: Any) -> bool:
            session = self.w.engine.session(token)
            ready = session.is_ready(idx)
            if not ready:
                runner.message.emit(f"encoding {_where(idx)}…")
            session.prefetch(todo, cancel)
            return True

        def done(_: bool) -> None:
            if token == self.w.engine.token and self.w.current_index() == idx:
                self.w.set_status(f"{_where(idx)}: ready (neighbours encoded)")

        runner.start("prefetch", work, done, on_error=lambda exc: self.w.set_status(f"not ready: {exc}"))
