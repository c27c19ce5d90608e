"""Prompt layers for one image: clicks (Points with a polarity feature), boxes (Shapes), preview.

Points carry their polarity in the ``"positive"`` feature (bool). A new point, clicked or added
from a script, takes ``points_layer.feature_defaults``, which follows negative mode; a click
with Shift held (or Ctrl / Cmd) places the opposite kind of point.

The pure part (:func:`prompts_by_slice`) turns layer data into per-slice 2D prompts and is
tested without a viewer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from napari.layers import Image, Labels, Points, Shapes

    from napari_sam._napari.session import ImageSpec

Index = tuple[int, ...]
POSITIVE = "positive"  # the Points feature holding polarity
POSITIVE_COLOUR = "#39ff14"
NEGATIVE_COLOUR = "#ff2e63"
BOX_COLOUR = "#ffd400"
PREVIEW_COLOUR = (0.0, 0.85, 1.0, 1.0)
NEGATIVE_MODIFIERS = ("Shift", "Control")  # Shift-click (or Ctrl/Cmd-click): a negative point
ROLE = "napari_sam_role"  # layer.metadata key marking the widget's own layers


def is_prompt_layer(layer: Any) -> bool:
    """True for the points, boxes and preview layers the widget made."""
    return ROLE in getattr(layer, "metadata", {})


@dataclass(frozen=True)
class SlicePrompt:
    """The prompts of one slice, ready for the engine.

    Attributes
    ----------
    points : (N, 2) float, (row, col) in data pixels
    labels : (N,) int, 1 positive / 0 negative
    box : (4,) float (min_row, min_col, max_row, max_col), or None
    """

    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        return len(self.points) == 0 and self.box is None

    def key(self) -> tuple[Any, ...]:
        """Hashable summary; equal keys mean an identical decode."""
        box = None if self.box is None else tuple(np.round(self.box, 3))
        pts = tuple(map(tuple, np.round(self.points, 3)))
        return pts, tuple(int(v) for v in self.labels), box


def prompts_by_slice(
    points: np.ndarray,
    positive: Sequence[bool] | np.ndarray,
    boxes: Sequence[np.ndarray],
    lead_axes: Sequence[int],
) -> dict[Index, SlicePrompt]:
    """Group napari prompt-layer data by slice.

    Parameters
    ----------
    points : (N, D)
        Points layer data in the image's data coordinates, D = image layer ndim.
    positive : (N,) bool
        Polarity of each point.
    boxes : list of (k, D)
        Shapes layer data (rectangles; any shape counts by its bounding box). On each slice the
        last box drawn is used.
    lead_axes : tuple of int
        Axes of D that index slices (the image's leading axes without a channel axis). The last
        two axes are (row, col).

    Returns
    -------
    dict
        ``{index: SlicePrompt}`` for every slice that has a prompt; index ``()`` for 2D.
    """
    lead = list(lead_axes)
    pts = np.asarray(points, dtype=np.float64).reshape(len(points), -1) if len(points) else None
    pol = np.asarray(positive, dtype=bool).reshape(-1)
    groups: dict[Index, list[int]] = {}
    if pts is not None:
        if len(pol) != len(pts):
            raise ValueError(f"{len(pts)} points but {len(pol)} polarity values")
        keys = np.rint(pts[:, lead]).astype(int) if lead else np.zeros((len(pts), 0), int)
        for i, key in enumerate(map(tuple, keys)):
            groups.setdefault(key, []).append(i)
    last_box: dict[Index, np.ndarray] = {}
    for shape in boxes:
        verts = np.asarray(shape, dtype=np.float64)
        if verts.ndim != 2 or len(verts) == 0:
            continue
        key = tuple(int(v) for v in np.rint(verts[0, lead])) if lead else ()
        yx = verts[:, -2:]
        last_box[key] = np.concatenate([yx.min(axis=0), yx.max(axis=0)])
    out: dict[Index, SlicePrompt] = {}
    for key in [*groups, *(k for k in last_box if k not in groups)]:
        rows = groups.get(key, [])
        p2 = pts[rows][:, -2:] if rows and pts is not None else np.zeros((0, 2))
        out[key] = SlicePrompt(p2, pol[rows].astype(np.int64), last_box.get(key))
    return out


def point_size(plane_shape: Sequence[int]) -> float:
    """A marker size (data pixels) that is visible but small on a plane of this shape."""
    return float(max(3.0, round(max(plane_shape) / 60)))


class PromptLayers:
    """The points, boxes and preview layers of one image, and their events.

    Parameters
    ----------
    viewer : napari.Viewer
    image_layer : napari.layers.Image
    spec : ImageSpec
        The image as the engine sees it (decides the preview's shape).
    on_change : callable
        Called (no arguments) whenever a prompt is added, moved, deleted or changes polarity.
    """

    def __init__(
        self,
        viewer: napari.Viewer,
        image_layer: Image,
        spec: ImageSpec,
        on_change: Callable[[], None],
    ) -> None:
        self.viewer = viewer
        self.image_layer = image_layer
        self.spec = spec
        self._on_change = on_change
        self._negative = False
        self.points: Points | None = None
        self.boxes: Shapes | None = None
        self.preview: Labels | None = None
        self.key_bindings: dict[str, Callable[[Any], Any]] = {}

    # -- layers ------------------------------------------------------------------------------
    def _placement(self, drop_channel: bool) -> dict[str, Any]:
        scale = list(self.image_layer.scale)
        translate = list(self.image_layer.translate)
        if drop_channel and self.spec.channel_axis is not None:
            del scale[self.spec.channel_axis]
            del translate[self.spec.channel_axis]
        return {"scale": scale, "translate": translate}

    def ensure(self) -> None:
        """Create (again) any prompt layer that is missing, e.g. deleted by the user."""
        from napari.layers import Labels, Points, Shapes
        from napari.utils.colormaps import DirectLabelColormap

        name = self.image_layer.name
        layers = self.viewer.layers
        if self.preview is None or self.preview not in layers:
            self.preview = Labels(
                np.zeros(self.spec.labels_shape, dtype=np.uint8),
                name=f"{name} [SAM preview]",
                metadata={ROLE: "preview"},
                opacity=0.55,
                colormap=DirectLabelColormap(
                    color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), 1: PREVIEW_COLOUR}
                ),
                **self._placement(drop_channel=True),
            )
            self.preview.editable = False
            layers.append(self.preview)
        if self.boxes is None or self.boxes not in layers:
            self.boxes = Shapes(
                ndim=self.image_layer.ndim,
                name=f"{name} [SAM boxes]",
                metadata={ROLE: "boxes"},
                edge_color=BOX_COLOUR,
                face_color="transparent",
                edge_width=max(1.0, point_size(self.spec.plane_shape) / 3),
                **self._placement(drop_channel=False),
            )
            self.boxes.events.data.connect(self._changed)
            self._bind_keys(self.boxes)
            layers.append(self.boxes)
        if self.points is None or self.points not in layers:
            self.points = Points(
                ndim=self.image_layer.ndim,
                name=f"{name} [SAM points]",
                metadata={ROLE: "points"},
                features=pd.DataFrame({POSITIVE: pd.Series([], dtype=bool)}),
                feature_defaults={POSITIVE: not self._negative},
                face_color=POSITIVE,
                face_color_cycle={True: POSITIVE_COLOUR, False: NEGATIVE_COLOUR},
                border_color="white",
                border_width=0.15,
                size=point_size(self.spec.plane_shape),
                **self._placement(drop_channel=False),
            )
            self.points.events.data.connect(self._points_changed)
            self.points.events.features.connect(self._changed)
            self.points.mouse_drag_callbacks.insert(0, self._on_press)
            self._bind_keys(self.points)
            layers.append(self.points)
            self.points.mode = "add"

    def bind(self, key_bindings: dict[str, Callable[[Any], Any]]) -> None:
        """Keys to bind on the prompt layers (active while one of them is selected)."""
        self.key_bindings = dict(key_bindings)
        for layer in (self.points, self.boxes):
            if layer is not None:
                self._bind_keys(layer)

    def _bind_keys(self, layer: Any) -> None:
        for key, func in self.key_bindings.items():
            layer.bind_key(key, func, overwrite=True)

    def remove(self) -> None:
        """Disconnect and take the prompt layers out of the viewer (switching image)."""
        if self.points is not None:
            self.points.events.data.disconnect(self._points_changed)
            self.points.events.features.disconnect(self._changed)
            if self._on_press in self.points.mouse_drag_callbacks:
                self.points.mouse_drag_callbacks.remove(self._on_press)
        if self.boxes is not None:
            self.boxes.events.data.disconnect(self._changed)
        for layer in (self.points, self.boxes, self.preview):
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.points = self.boxes = self.preview = None

    def alive(self, layer: Any) -> bool:
        """True if ``layer`` exists and is still in the viewer (the user may delete it)."""
        return layer is not None and layer in self.viewer.layers

    # -- polarity ----------------------------------------------------------------------------
    @property
    def negative(self) -> bool:
        """Negative mode: new points are negative (background) clicks."""
        return self._negative

    @negative.setter
    def negative(self, value: bool) -> None:
        self._negative = bool(value)
        if self.points is not None:
            self.points.feature_defaults = {POSITIVE: not self._negative}

    def _on_press(self, layer: Points, event: Any) -> None:
        # Runs before napari's "add" mode callback; the point is added on release with the
        # feature defaults, which _points_changed restores afterwards.
        flip = any(m in event.modifiers for m in NEGATIVE_MODIFIERS)
        layer.feature_defaults = {POSITIVE: self._negative == flip}

    def _points_changed(self, event: Any) -> None:
        action = str(getattr(event, "action", "")).lower()
        if action.endswith("ing"):  # "adding", "removing", "changing": not done yet
            return
        if action == "added" and self.points is not None:
            self.points.feature_defaults = {POSITIVE: not self._negative}  # undo a Ctrl-click
        self._on_change()

    def _changed(self, event: Any = None) -> None:
        action = str(getattr(event, "action", "")).lower() if event is not None else ""
        if action.endswith("ing"):
            return
        self._on_change()

    # -- reading prompts ---------------------------------------------------------------------
    def current(self) -> dict[Index, SlicePrompt]:
        """Prompts on every slice, from the layers as they are now."""
        pts = np.zeros((0, self.image_layer.ndim))
        positive = np.zeros(0, dtype=bool)
        if self.alive(self.points) and len(self.points.data):  # type: ignore[union-attr]
            pts = np.asarray(self.points.data)  # type: ignore[union-attr]
            positive = self.points.features[POSITIVE].to_numpy(dtype=bool)  # type: ignore[union-attr]
        boxes = list(self.boxes.data) if self.alive(self.boxes) else []  # type: ignore[union-attr]
        return prompts_by_slice(pts, positive, boxes, self.spec.lead_axes)

    def clear(self) -> None:
        """Remove every prompt and blank the preview."""
        if self.points is not None and len(self.points.data):
            self.points.data = np.zeros((0, self.image_layer.ndim))
        if self.boxes is not None and self.boxes.nshapes:
            self.boxes.data = []
        self.clear_preview()
        self.ensure()

    # -- preview -----------------------------------------------------------------------------
    def _live_preview(self) -> Labels | None:
        return self.preview if self.alive(self.preview) else None

    def show_mask(self, index: Index, mask: np.ndarray | None) -> None:
        """Put a (Y, X) mask (None: nothing) on slice ``index`` of the preview."""
        preview = self._live_preview()
        if preview is not None:
            plane = preview.data[index] if index else preview.data
            plane[...] = 0 if mask is None else mask
            preview.refresh()

    def show_volume(self, lead: Index, volume: np.ndarray) -> None:
        """Put a (Z, Y, X) volume at leading index ``lead`` (all but the last leading axis)."""
        preview = self._live_preview()
        if preview is not None:
            preview.data[lead] = volume
            preview.refresh()

    def clear_preview(self) -> None:
        preview = self._live_preview()
        if preview is not None:
            preview.data[...] = 0
            preview.refresh()

    def preview_mask(self) -> np.ndarray | None:
        """The whole preview as bool (labels shape), or None if it is gone."""
        preview = self._live_preview()
        return None if preview is None else np.asarray(preview.data) > 0
