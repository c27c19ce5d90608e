"""Label schemes and writing masks into label arrays without clobbering.

Two schemes are supported:

* plain instances (``LabelScheme(divisor=None)``): label ``n > 0`` is object ``n``;
* panoptic (``LabelScheme(divisor=1000, classes=...)``): label
  ``class_id * divisor + instance_id``, the Cityscapes / Panoptic-DeepLab convention.
  Instance 0 of a class is a semantic-only region of that class.

Label arrays are integer arrays of any shape in napari order, e.g. (Y, X) or (Z, Y, X).
Their dtype is uint32 unless the user's array is already wider (`choose_dtype`).
Running out of instance IDs raises `LabelSpaceFullError`; IDs never wrap around.
This module is numpy only: no torch, Qt or napari.
"""

from napari_sam.labels.editing import (
    choose_dtype,
    merge_panoptic,
    relabel,
    split_panoptic,
    write_mask,
)
from napari_sam.labels.metadata import colormap_dict, from_metadata, to_metadata
from napari_sam.labels.scheme import (
    FORMAT,
    FORMAT_VERSION,
    PALETTE,
    RGBA,
    ClassInfo,
    LabelMetadataError,
    LabelScheme,
    LabelSpaceFullError,
    Mode,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "PALETTE",
    "RGBA",
    "ClassInfo",
    "LabelMetadataError",
    "LabelScheme",
    "LabelSpaceFullError",
    "Mode",
    "choose_dtype",
    "colormap_dict",
    "from_metadata",
    "merge_panoptic",
    "relabel",
    "split_panoptic",
    "to_metadata",
    "write_mask",
]
