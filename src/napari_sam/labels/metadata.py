"""Label schemes in layer metadata and files, and colours for napari's label colormap."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from napari_sam.labels.scheme import (
    FORMAT,
    FORMAT_VERSION,
    PALETTE,
    RGBA,
    ClassInfo,
    LabelMetadataError,
    LabelScheme,
    _check_labels,
    _parse_colour,
)


def to_metadata(scheme: LabelScheme) -> dict[str, Any]:
    """JSON-serialisable dict of ``scheme`` for ``layer.metadata["napari_sam"]`` and files."""
    classes = sorted(scheme._table(), key=lambda c: c.id)
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "divisor": scheme.divisor,
        "classes": [{"id": c.id, "name": c.name, "colour": list(c.colour)} for c in classes],
    }


def from_metadata(metadata: Mapping[str, Any]) -> LabelScheme:
    """Rebuild a `LabelScheme` from `to_metadata` output (or a layer's whole metadata).

    Raises `LabelMetadataError` for missing, corrupt or newer-version metadata.
    """
    if isinstance(metadata, Mapping) and "format" not in metadata and "napari_sam" in metadata:
        metadata = metadata["napari_sam"]
    if not isinstance(metadata, Mapping) or metadata.get("format") != FORMAT:
        raise LabelMetadataError(f"not napari-sam label metadata (no format {FORMAT!r})")
    version = metadata.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise LabelMetadataError(f"label metadata has an invalid version {version!r}")
    if version > FORMAT_VERSION:
        raise LabelMetadataError(
            f"label metadata version {version} is newer than this napari-sam supports "
            f"({FORMAT_VERSION}); upgrade napari-sam"
        )
    try:
        entries = metadata["classes"]
        if not isinstance(entries, list):
            raise TypeError("'classes' must be a list")
        classes = {e["id"]: ClassInfo(e["id"], e["name"], e["colour"]) for e in entries}
        if len(classes) != len(entries):
            raise ValueError("duplicate class ids")
        return LabelScheme(divisor=metadata["divisor"], classes=classes)
    except (KeyError, TypeError, ValueError) as err:
        raise LabelMetadataError(f"corrupt napari-sam label metadata: {err!r}") from err


def _vary(colour: RGBA, key: int) -> RGBA:
    """Lighten or darken ``colour`` by up to 30 %, deterministically per ``key``."""
    t = ((key * 2654435761) % 2**32) / 2**32 * 0.6 - 0.3
    r, g, b = (c + (1.0 - c) * t if t >= 0 else c * (1.0 + t) for c in colour[:3])
    return (r, g, b, colour[3])


def colormap_dict(
    scheme: LabelScheme, label_ids: Iterable[int] | np.ndarray
) -> dict[int | None, RGBA]:
    """Colours for napari's ``DirectLabelColormap``: ``{label_id: (r, g, b, a)}``.

    Panoptic instances get their class colour, varied slightly per instance (instance 0,
    the semantic region, gets it unchanged); plain instances get palette colours. Label 0
    is transparent; key ``None`` (napari's default for IDs missing from the dict) is grey,
    as are IDs whose class is not in the table.
    """
    arr = label_ids if isinstance(label_ids, np.ndarray) else np.asarray(list(label_ids))
    ids = np.unique(_check_labels(arr if arr.size else arr.astype(np.int64)))
    grey: RGBA = (0.5, 0.5, 0.5, 1.0)
    out: dict[int | None, RGBA] = {None: grey, 0: (0.0, 0.0, 0.0, 0.0)}
    for label in (int(i) for i in ids if i):
        if scheme.divisor is None:
            base = _parse_colour(PALETTE[(label * 7) % len(PALETTE)])
            out[label] = _vary(base, label)
            continue
        cid, inst = divmod(label, scheme.divisor)
        entry = scheme.classes.get(cid)
        if not isinstance(entry, ClassInfo):
            out[label] = grey
        else:
            out[label] = entry.colour if inst == 0 else _vary(entry.colour, inst)
    return out
