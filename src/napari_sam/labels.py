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

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

FORMAT = "napari-sam-labels"
FORMAT_VERSION = 1
# A fixed palette of distinct colours; class k gets PALETTE[(k - 1) % len(PALETTE)].
PALETTE = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4",
    "#f032e6", "#bfef45", "#ffe119", "#469990", "#9a6324", "#800000",
)  # fmt: skip
Mode = Literal["keep", "replace", "same_class"]
RGBA = tuple[float, float, float, float]


class LabelSpaceFullError(ValueError):
    """Every instance ID of a class (or of the label dtype) is in use."""


class LabelMetadataError(ValueError):
    """Label-scheme metadata is missing, corrupt or from a newer napari-sam."""


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _parse_colour(colour: str | Sequence[float]) -> RGBA:
    if isinstance(colour, str):
        digits = colour[1:] if colour.startswith("#") else colour
        if len(digits) in (3, 4):
            digits = "".join(ch * 2 for ch in digits)
        if len(digits) == 6:
            digits += "ff"
        try:
            if len(digits) != 8:
                raise ValueError
            r, g, b, a = (int(digits[i : i + 2], 16) / 255 for i in range(0, 8, 2))
        except ValueError:
            raise ValueError(f"colour {colour!r} is not a hex colour like '#ff8800'") from None
        return (r, g, b, a)
    try:
        values = [float(v) for v in colour]
    except (TypeError, ValueError):
        raise TypeError(f"colour must be a hex string or 3-4 floats, got {colour!r}") from None
    if len(values) not in (3, 4) or not all(0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"colour {colour!r} must be 3 or 4 floats in 0..1 (RGB or RGBA)")
    r, g, b, *alpha = values
    return (r, g, b, alpha[0] if alpha else 1.0)


@dataclass(frozen=True)
class ClassInfo:
    """One entry of a class table.

    Parameters
    ----------
    id : int
        Class ID, >= 1 (0 is background).
    name : str
        Human-readable name.
    colour : str or sequence of float, optional
        Hex (``"#rrggbb"``/``"#rrggbbaa"``) or RGB(A) floats in 0..1; stored as an RGBA
        float tuple. Default: the palette colour of ``id``.
    """

    id: int
    name: str
    colour: RGBA = None  # type: ignore[assignment]  # None -> palette colour

    def __post_init__(self) -> None:
        cid = _as_int(self.id, "class id")
        if cid < 1:
            raise ValueError(f"class id must be >= 1 (0 is background), got {cid}")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"class name must be a non-empty string, got {self.name!r}")
        colour = PALETTE[(cid - 1) % len(PALETTE)] if self.colour is None else self.colour
        object.__setattr__(self, "id", cid)
        object.__setattr__(self, "colour", _parse_colour(colour))

    @property
    def hex(self) -> str:
        """The colour as ``"#rrggbbaa"``."""
        return "#" + "".join(f"{round(c * 255):02x}" for c in self.colour)


@dataclass
class LabelScheme:
    """How label IDs encode (class, instance), plus the class table.

    Parameters
    ----------
    divisor : int or None
        None: plain instance IDs. Otherwise label = class_id * divisor + instance_id,
        with 0 <= instance_id < divisor; must be >= 2.
    classes : mapping of int to str or ClassInfo
        Class table ``{id: "name"}`` or ``{id: ClassInfo}``; normalised to
        ``{id: ClassInfo}``. Only panoptic schemes have classes.

    Notes
    -----
    `add_class`, `rename_class` and `recolour_class` change this scheme in place and return
    the new `ClassInfo`. Store the scheme again (`to_metadata`) after editing it.
    """

    divisor: int | None = None
    classes: Mapping[int, ClassInfo | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.divisor is not None:
            self.divisor = _as_int(self.divisor, "divisor")
            if self.divisor < 2:
                raise ValueError(f"divisor must be >= 2 (e.g. 1000), got {self.divisor}")
        table: dict[int, ClassInfo] = {}
        for key, value in dict(self.classes).items():
            cid = _as_int(key, "class id")
            info = value if isinstance(value, ClassInfo) else ClassInfo(cid, value)
            if info.id != cid:
                raise ValueError(f"class table key {cid} does not match ClassInfo id {info.id}")
            table[cid] = info
        if table and self.divisor is None:
            raise ValueError("a plain scheme (divisor=None) has no classes; set a divisor")
        self.classes = table

    @property
    def is_panoptic(self) -> bool:
        """True when labels encode class_id * divisor + instance_id."""
        return self.divisor is not None

    def info(self, class_id: int) -> ClassInfo:
        """The table entry of ``class_id``; ValueError naming the known classes if absent."""
        entry = self.classes.get(class_id)
        if not isinstance(entry, ClassInfo):
            known = ", ".join(f"{c.id}={c.name!r}" for c in self._table()) or "none"
            raise ValueError(f"class {class_id} is not in the class table (known: {known})")
        return entry

    def _table(self) -> list[ClassInfo]:
        return [c for c in self.classes.values() if isinstance(c, ClassInfo)]

    def _require_panoptic(self, what: str) -> int:
        if self.divisor is None:
            raise ValueError(f"{what} needs a panoptic scheme; this one has divisor=None")
        return self.divisor

    def add_class(
        self, name: str, colour: str | Sequence[float] | None = None, class_id: int | None = None
    ) -> ClassInfo:
        """Add a class in place (id default: largest id + 1) and return its `ClassInfo`."""
        self._require_panoptic("add_class")
        cid = max(self.classes, default=0) + 1 if class_id is None else class_id
        if cid in self.classes:
            raise ValueError(f"class id {cid} is already used by {self.info(cid).name!r}")
        info = ClassInfo(cid, name, colour)  # type: ignore[arg-type]
        self.classes = {**self.classes, info.id: info}
        return info

    def rename_class(self, class_id: int, name: str) -> ClassInfo:
        """Rename a class in place and return the updated `ClassInfo`."""
        info = dataclasses.replace(self.info(class_id), name=name)
        self.classes = {**self.classes, class_id: info}
        return info

    def recolour_class(self, class_id: int, colour: str | Sequence[float]) -> ClassInfo:
        """Change a class colour in place and return the updated `ClassInfo`."""
        info = dataclasses.replace(self.info(class_id), colour=colour)  # type: ignore[arg-type]
        self.classes = {**self.classes, class_id: info}
        return info

    def max_instance(self, dtype: Any = np.uint32) -> int:
        """Largest instance ID: ``divisor - 1`` (panoptic) or the max of ``dtype`` (plain)."""
        if self.divisor is not None:
            return self.divisor - 1
        return int(np.iinfo(dtype).max)

    def encode(self, class_id: int | None = None, instance_id: int = 0) -> int:
        """Label ID of (class, instance); a plain scheme returns ``instance_id`` (class None/0).

        Raises ValueError if the class (>= 1) or instance (0..divisor-1) is out of range.
        """
        inst = _as_int(instance_id, "instance_id")
        if self.divisor is None:
            if class_id not in (None, 0):
                raise ValueError("a plain scheme has no classes: pass class_id=None")
            if inst < 0:
                raise ValueError(f"instance_id must be >= 0, got {inst}")
            return inst
        if class_id is None:
            raise ValueError("a panoptic scheme needs a class_id (>= 1)")
        cid = _as_int(class_id, "class_id")
        if cid < 1:
            raise ValueError(f"class_id must be >= 1 (0 is background), got {cid}")
        if not 0 <= inst < self.divisor:
            raise ValueError(
                f"instance_id {inst} is out of range 0..{self.divisor - 1} for divisor "
                f"{self.divisor}; use a larger divisor (see relabel)"
            )
        return cid * self.divisor + inst

    def decode(self, labels: Any) -> tuple[np.ndarray, np.ndarray]:
        """Split labels into ``(class_ids, instance_ids)``, both of ``labels``' shape and dtype.

        A plain scheme gives class 0 everywhere and instance = label.
        """
        arr = _check_labels(labels)
        if self.divisor is None or self.divisor > np.iinfo(arr.dtype).max:
            return np.zeros_like(arr), arr.copy()
        classes, instances = np.divmod(arr, arr.dtype.type(self.divisor))
        return classes, instances

    def next_instance(self, labels: Any, class_id: int | None = None) -> int:
        """Instance ID for a new object of ``class_id``: the largest one in use + 1.

        IDs are not reused after a deletion while larger ones exist; only when the
        largest + 1 exceeds the limit (`max_instance`, for plain schemes the max of the
        labels' dtype) is the smallest free ID returned. Raises `LabelSpaceFullError`
        if every ID is in use.
        """
        arr = _check_labels(labels)
        limit = self.max_instance(arr.dtype)
        if self.divisor is None:
            what = f"plain labels of dtype {arr.dtype}"
            used = arr[arr > 0]
        else:
            cid = self.encode(class_id, 0) // self.divisor  # validates class_id
            name = self.classes.get(cid)
            what = f"class {cid} ({name.name!r})" if isinstance(name, ClassInfo) else f"class {cid}"
            low = cid * self.divisor
            if low > np.iinfo(arr.dtype).max:
                return 1
            in_class = (arr > low) & (arr <= min(low + limit, np.iinfo(arr.dtype).max))
            used = arr[in_class] - arr.dtype.type(low)
        if used.size == 0:
            return 1
        largest = int(used.max())
        if largest < limit:
            return largest + 1
        ids = np.unique(used)
        gaps = np.flatnonzero(ids != np.arange(1, ids.size + 1, dtype=ids.dtype))
        if gaps.size:
            return int(gaps[0]) + 1
        fix = "a larger divisor (relabel)" if self.divisor else "a wider dtype such as uint32"
        raise LabelSpaceFullError(
            f"all {limit} instance IDs of {what} are in use; delete objects or use {fix}"
        )


def _check_labels(labels: Any) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iu":
        raise TypeError(
            f"labels must be an integer array, got dtype {arr.dtype}; "
            "convert with labels.astype(np.uint32)"
        )
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise ValueError("labels must be >= 0; negative label IDs are not supported")
    return arr


def choose_dtype(existing: Any = None) -> np.dtype:
    """dtype for a label array: uint32, unless ``existing`` (a dtype or array) is a wider int."""
    if existing is not None:
        dtype = getattr(existing, "dtype", None)
        dtype = dtype if isinstance(dtype, np.dtype) else np.dtype(existing)
        if dtype.kind in "iu" and dtype.itemsize > 4:
            return dtype
    return np.dtype(np.uint32)


def _fitting_dtype(largest: int, preferred: Any = None) -> np.dtype:
    for dtype in (choose_dtype(preferred), np.dtype(np.uint64)):
        if largest <= np.iinfo(dtype).max:
            return dtype
    raise ValueError(f"label ID {largest} does not fit in 64 bits; use a smaller divisor")


def write_mask(
    labels: np.ndarray,
    mask: Any,
    scheme: LabelScheme,
    class_id: int | None = None,
    mode: Mode = "keep",
    instance_id: int | None = None,
    offset: Sequence[int] | None = None,
) -> int:
    """Write one object into ``labels`` in place and return its label ID.

    Parameters
    ----------
    labels : numpy.ndarray
        Writable integer label array, any shape, e.g. (Y, X) or (Z, Y, X). To write a 2D
        mask on plane z of a stack, pass the view ``labels[z]``.
    mask : array of bool (or of 0/1 integers)
        The object, of ``labels``' shape, or of a sub-region starting at ``offset``.
    scheme : LabelScheme
        Decides the ID: ``scheme.encode(class_id, instance_id)``.
    class_id : int, optional
        Required for a panoptic scheme (and must be in its class table); None for plain.
    mode : {"keep", "replace", "same_class"}
        "keep": only background (0) pixels change. "replace": every mask pixel changes.
        "same_class": background pixels and pixels of the same class change; with a plain
        scheme all objects share one class, so it acts like "replace".
    instance_id : int, optional
        Write under this instance (to extend or refine an existing object); default
        `LabelScheme.next_instance`.
    offset : sequence of int, optional
        Index in ``labels`` of the mask's first pixel, one per axis; default all 0.

    Returns
    -------
    int
        The label ID written. An empty mask, or a "keep" write onto labelled pixels only,
        writes nothing and still returns the ID (no error).
    """
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"labels must be a numpy array to write in place, got {type(labels)}")
    if not labels.flags.writeable:
        raise ValueError("labels is read-only; pass a writable copy (labels.copy())")
    _check_labels(labels)
    mask = np.asarray(mask)
    if mask.dtype.kind in "iu":
        if mask.size and (mask.min() < 0 or mask.max() > 1):
            raise TypeError("integer mask must hold only 0 and 1; for labels use labels == id")
        mask = mask.astype(bool)
    elif mask.dtype != bool:
        raise TypeError(f"mask must be boolean, got {mask.dtype}; threshold it (mask > 0.5)")
    if offset is None and mask.shape != labels.shape:
        raise ValueError(
            f"mask shape {mask.shape} differs from labels shape {labels.shape}; for one plane "
            "pass labels[z], for a sub-region pass offset="
        )
    start = (0,) * labels.ndim if offset is None else tuple(_as_int(o, "offset") for o in offset)
    if len(start) != labels.ndim or mask.ndim != labels.ndim:
        raise ValueError(f"mask ({mask.ndim}D) and offset must match the labels' {labels.ndim}D")
    if any(o < 0 or o + m > n for o, m, n in zip(start, mask.shape, labels.shape)):
        raise ValueError(
            f"mask of shape {mask.shape} at offset {start} does not fit in labels of shape "
            f"{labels.shape}"
        )
    if mode not in ("keep", "replace", "same_class"):
        raise ValueError(f"mode must be 'keep', 'replace' or 'same_class', got {mode!r}")
    if scheme.is_panoptic:
        if class_id is None:
            raise ValueError("a panoptic scheme needs class_id: which class is this object?")
        scheme.info(class_id)
    elif class_id is not None:
        raise ValueError("a plain scheme has no classes: pass class_id=None")
    if instance_id is None:
        instance_id = scheme.next_instance(labels, class_id)
    elif not scheme.is_panoptic and _as_int(instance_id, "instance_id") < 1:
        raise ValueError(f"instance_id must be >= 1 for plain labels, got {instance_id}")
    label_id = scheme.encode(class_id, instance_id)
    if label_id > np.iinfo(labels.dtype).max:
        raise TypeError(
            f"label ID {label_id} does not fit in labels of dtype {labels.dtype} "
            f"(max {np.iinfo(labels.dtype).max}); convert with labels.astype(np.uint32)"
        )
    region = labels[tuple(slice(o, o + m) for o, m in zip(start, mask.shape))]
    if mode == "keep":
        mask = mask & (region == 0)
    elif mode == "same_class" and scheme.divisor is not None:
        low = _as_int(class_id, "class_id") * scheme.divisor
        high = min(low + scheme.divisor - 1, np.iinfo(labels.dtype).max)
        mask = mask & ((region == 0) | ((region >= low) & (region <= high)))
    region[mask] = label_id
    return label_id


def relabel(
    labels: Any, old_scheme: LabelScheme, new_scheme: LabelScheme, class_id: int | None = None
) -> np.ndarray:
    """Re-encode ``labels`` from ``old_scheme`` to ``new_scheme``; returns a new array.

    Panoptic -> panoptic keeps (class, instance) (e.g. divisor 1000 -> 10000). Plain ->
    panoptic puts every object in ``class_id``. Panoptic -> plain numbers the distinct
    labels 1..n in increasing order. Raises ValueError if an instance does not fit the
    new divisor or a class is missing from the new table. dtype: `choose_dtype` of the
    input, or uint64 if the IDs need it.
    """
    arr = _check_labels(labels)
    if not new_scheme.is_panoptic:
        if not old_scheme.is_panoptic:
            return arr.astype(choose_dtype(arr), copy=True)
        uniq, inverse = np.unique(arr, return_inverse=True)
        new_ids = np.cumsum(uniq != 0).astype(_fitting_dtype(int(uniq.size), arr))
        return new_ids[inverse].reshape(arr.shape)
    if old_scheme.is_panoptic:
        classes, instances = old_scheme.decode(arr)
        if np.any((classes == 0) & (instances != 0)):
            raise ValueError(f"labels below the divisor {old_scheme.divisor} have no class")
    else:
        if class_id is None:
            raise ValueError("converting plain labels to panoptic needs class_id for the objects")
        new_scheme.info(class_id)
        classes, instances = (arr > 0).astype(np.uint64) * np.uint64(class_id), arr
    return merge_panoptic(classes, instances, new_scheme)


def split_panoptic(labels: Any, scheme: LabelScheme) -> tuple[np.ndarray, np.ndarray]:
    """Split panoptic labels into ``(semantic, instance)`` arrays of ``labels``' shape.

    ``semantic`` holds class IDs (0 background); ``instance`` holds instance IDs within
    their class (0 for background and semantic-only regions). Both keep ``labels``' dtype.
    """
    scheme._require_panoptic("split_panoptic")
    return scheme.decode(labels)


def merge_panoptic(
    semantic: Any, instance: Any, scheme: LabelScheme, dtype: Any = None
) -> np.ndarray:
    """Combine class and instance arrays of one shape into panoptic labels.

    Every class present must be in ``scheme``'s table, every instance < divisor, and
    instance pixels need a class. ``dtype`` None: `choose_dtype` of the instance array
    (uint32 unless it is wider), or uint64 if the IDs need it.
    """
    divisor = scheme._require_panoptic("merge_panoptic")
    sem, inst = _check_labels(semantic), _check_labels(instance)
    if sem.shape != inst.shape:
        raise ValueError(f"semantic {sem.shape} and instance {inst.shape} shapes differ")
    if inst.size and int(inst.max()) >= divisor:
        raise ValueError(
            f"instance ID {int(inst.max())} does not fit divisor {divisor}; "
            "use a larger divisor (e.g. 10 * divisor)"
        )
    if np.any((sem == 0) & (inst != 0)):
        raise ValueError("some instance pixels have class 0 (background); give them a class")
    for cid in np.unique(sem):
        if cid:
            scheme.info(int(cid))
    largest = int(sem.max()) * divisor + int(inst.max()) if sem.size else 0
    if dtype is None:
        dtype = _fitting_dtype(largest, inst)
    elif np.dtype(dtype).kind not in "iu" or largest > np.iinfo(dtype).max:
        raise TypeError(f"label ID {largest} does not fit dtype {np.dtype(dtype)}; use uint32")
    dtype = np.dtype(dtype)
    return sem.astype(dtype) * dtype.type(divisor) + inst.astype(dtype)


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
