"""Reading images and writing label results: TIFF / OME-TIFF, zarr / OME-Zarr, folders.

Images are opened lazily where the format allows it, so a volume larger than memory can be
processed plane by plane: an uncompressed TIFF is memory-mapped, a compressed or tiled TIFF is
read through tifffile's zarr view, a zarr array is returned as is (OME-Zarr: resolution level 0).
Axes follow napari's order with the channel last, e.g. ``"YX"``, ``"YXC"``, ``"ZYX"``,
``"TZYX"``; singleton axes other than Y and X are dropped.

Label results are written with their label scheme (see :mod:`napari_sam.labels`) and a
provenance record (model, weights hash, parameters, package version, input signature) so every
result can be reproduced:

* TIFF: the record is JSON in the ImageDescription tag and in a ``<name>.json`` sidecar;
* zarr: the record is in the array's attributes.

Prompt files (our CSV / JSON formats, napari Points and Shapes layers saved as CSV) are read
by :func:`read_prompts` (see :mod:`napari_sam.io.prompts` for the formats).
"""

from napari_sam.io.images import (
    IMAGE_SUFFIXES,
    Image,
    InputError,
    combine_signature,
    expand_inputs,
    image_signature,
    open_image,
    open_stack,
    plane_digest,
    read_image,
)
from napari_sam.io.prompts import ObjectPrompt, PromptFileError, check_in_stack, read_prompts
from napari_sam.io.results import (
    OutputExistsError,
    check_writable,
    provenance,
    read_labels,
    sidecar_path,
    write_labels,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "Image",
    "InputError",
    "ObjectPrompt",
    "OutputExistsError",
    "PromptFileError",
    "check_in_stack",
    "check_writable",
    "combine_signature",
    "expand_inputs",
    "image_signature",
    "open_image",
    "open_stack",
    "plane_digest",
    "provenance",
    "read_image",
    "read_labels",
    "read_prompts",
    "sidecar_path",
    "write_labels",
]
