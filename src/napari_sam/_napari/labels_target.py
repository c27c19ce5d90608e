"""The Labels layer objects are committed to, and its label scheme.

The scheme (plain or panoptic, divisor, class table) lives in the layer's
``metadata["napari_sam"]``; the class table editor shows it and edits it. Panoptic layers get a
colour per object from its class colour (:func:`napari_sam.labels.colormap_dict`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Labels

from napari_sam._napari.class_table import ClassTable, default_scheme
from napari_sam._napari.prompts import is_prompt_layer
from napari_sam.labels import LabelMetadataError, LabelScheme, colormap_dict, from_metadata, to_metadata

if TYPE_CHECKING:  # pragma: no cover
    import napari

    from napari_sam._napari.controls import LayerCombo


def is_target_candidate(layer: Any) -> bool:
    """A Labels layer that is not one of the widget's own (preview) layers."""
    return isinstance(layer, Labels) and not is_prompt_layer(layer)


class LabelsTarget:
    """Keeps the chosen Labels layer, the picker and the class table in step.

    Parameters
    ----------
    viewer : napari.Viewer
    combo : LayerCombo
        The labels picker ("new labels layer" + the viewer's Labels layers).
    class_table : ClassTable
    expected_shape : callable
        Returns the shape a target must have (the image's labels shape), or None if no image.
    """

    def __init__(
        self,
        viewer: napari.Viewer,
        combo: LayerCombo,
        class_table: ClassTable,
        expected_shape: Callable[[], tuple[int, ...] | None],
    ) -> None:
        self.viewer = viewer
        self.combo = combo
        self.class_table = class_table
        self.expected_shape = expected_shape
        self.layer: Labels | None = None
        self._new_scheme = default_scheme()
        self._known_ids: set[int] = set()
        class_table.scheme_changed.connect(self._scheme_edited)

    @property
    def scheme(self) -> LabelScheme:
        return self.class_table.scheme

    def _check(self, layer: Labels) -> None:
        if not is_target_candidate(layer) or layer not in self.viewer.layers:
            raise TypeError(f"labels_layer must be a Labels layer of this viewer, got {layer!r}")
        shape = self.expected_shape()
        if shape is not None and tuple(layer.data.shape) != shape:
            raise ValueError(
                f"labels layer {layer.name!r} has shape {tuple(layer.data.shape)}; the image needs "
                f"{shape}: choose another layer or 'new labels layer'"
            )

    def set(self, layer: Labels | None) -> None:
        """Make ``layer`` the target (None: "new labels layer")."""
        if layer is not None:
            self._check(layer)
        self.combo.set_layer(layer)
        self._adopt(layer)

    def chosen(self, layer: Labels | None) -> None:
        """The user picked ``layer`` in the combo; reverts the combo if it does not fit."""
        if layer is self.layer:
            return
        try:
            if layer is not None:
                self._check(layer)
        except (TypeError, ValueError):
            self.combo.set_layer(self.layer if self.layer in self.viewer.layers else None)
            raise
        self._adopt(layer)

    def _adopt(self, layer: Labels | None) -> None:
        self.layer = layer
        if layer is None:
            self.class_table.set_scheme(self._new_scheme)
            return
        data = np.asarray(layer.data)
        self._known_ids = {int(i) for i in np.unique(data)}
        has_labels = self._known_ids != {0}
        try:
            scheme = from_metadata(layer.metadata)
        except LabelMetadataError:
            scheme = LabelScheme() if has_labels else self.class_table.scheme
        self.class_table.set_scheme(scheme, locked=has_labels)
        self._store()

    def removed(self, layer: Any) -> None:
        """A layer left the viewer; forget it if it was the target."""
        if layer is self.layer:
            self.layer = None
            self.class_table.set_scheme(self._new_scheme)

    def ensure(self, image: Any, shape: tuple[int, ...], drop_axis: int | None) -> Labels:
        """The target layer; a new uint32 one over ``image`` if "new" is chosen."""
        if self.layer is not None and self.layer in self.viewer.layers:
            return self.layer
        scale, translate = list(image.scale), list(image.translate)
        if drop_axis is not None:
            del scale[drop_axis], translate[drop_axis]
        layer = self.viewer.add_labels(
            np.zeros(shape, dtype=np.uint32),
            name=f"{image.name} labels",
            scale=scale,
            translate=translate,
            metadata={"napari_sam": to_metadata(self.class_table.scheme)},
        )
        self.set(layer)
        return layer

    def written(self, ids: tuple[int, ...]) -> None:
        """After a commit: colours for the new IDs, the scheme locked, the new label selected."""
        if self.layer is None:
            return
        self._known_ids.update(ids)
        self.class_table.set_scheme(self.class_table.scheme, locked=True)
        self._store()
        if ids:
            self.layer.selected_label = ids[-1]

    def _scheme_edited(self, scheme: LabelScheme) -> None:
        if self.layer is None:
            self._new_scheme = scheme
        self._store()

    def _store(self) -> None:
        if self.layer is None:
            return
        scheme = self.class_table.scheme
        self.layer.metadata = {**self.layer.metadata, "napari_sam": to_metadata(scheme)}
        if scheme.is_panoptic:
            from napari.utils.colormaps import DirectLabelColormap

            colours = colormap_dict(scheme, sorted(self._known_ids))
            self.layer.colormap = DirectLabelColormap(color_dict=colours)
