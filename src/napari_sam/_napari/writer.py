"""npe2 writer: a Labels layer as TIFF or zarr *with* its label scheme and class table.

napari's built-in TIFF writer saves only the pixels, so panoptic IDs lose their meaning (class
names, colours, divisor). This writer stores ``layer.metadata["napari_sam"]`` through
:func:`napari_sam.io.write_labels` (JSON in the TIFF description plus a ``<name>.json``
sidecar; zarr attributes); :func:`napari_sam.io.read_labels` reads it back.
"""

from __future__ import annotations

from typing import Any

from napari_sam.labels import LabelMetadataError, LabelScheme, from_metadata


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Labels layer (napari passes ``data`` and the layer's ``meta`` dict)."""
    from napari_sam.io import write_labels as write

    metadata = meta.get("metadata") or {}
    try:
        scheme = from_metadata(metadata)
    except LabelMetadataError:
        scheme = LabelScheme()
    record = {"layer": meta.get("name"), "scale": [float(s) for s in meta.get("scale", ())]}
    written = write(path, data, scheme=scheme, metadata=record, overwrite=True)
    return [str(written)]
