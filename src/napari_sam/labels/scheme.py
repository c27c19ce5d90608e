"""Label schemes: plain instances or panoptic ``class_id * divisor + instance_id``, and the
class table (names and colours). numpy only."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
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
