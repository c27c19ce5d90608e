"""Prompt files: our CSV / JSON formats and napari Points / Shapes layers saved as CSV.

Formats (coordinates in napari order, data pixels; ``z`` only for 3D stacks):

* points CSV: ``z,row,col,label[,object]`` (``label`` 1 = positive, 0 = negative; default 1);
* boxes CSV: ``z,min_row,min_col,max_row,max_col[,object]``;
* JSON: ``{"points": [{"z": 3, "row": 10, "col": 20, "label": 1, "object": 1}, ...],
  "boxes": [{"z": 3, "min_row": 5, "min_col": 5, "max_row": 40, "max_col": 50}, ...]}``;
* napari Points CSV (``index,axis-0,axis-1[,axis-2]`` plus property columns; a ``label``
  property gives positive/negative) and napari Shapes CSV (``index,shape-type,vertex-index,
  axis-0,...``; rectangles, ellipses and polygons become their bounding box).

Objects: rows with the same ``object`` belong to one object (points and a box together).
Rows without an ``object`` value: every box and every positive point is an object of its own
(e.g. a list of nucleus centres), and a negative point applies to each of those objects on its
slice.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ObjectPrompt", "PromptFileError", "check_in_stack", "read_prompts"]

POINT_COLS = ("row", "col")
BOX_COLS = ("min_row", "min_col", "max_row", "max_col")
OPTIONAL = ("z", "label", "object")
FORMATS = (
    "expected z,row,col,label[,object] (points), z,min_row,min_col,max_row,max_col[,object] "
    "(boxes), or a napari Points/Shapes layer saved as CSV"
)


class PromptFileError(ValueError):
    """A prompt file that cannot be used; the message names the file and what is wrong."""


@dataclass
class ObjectPrompt:
    """The prompts of one object on one slice.

    Attributes
    ----------
    object_id : int
        Label ID the object gets in the output.
    index : tuple[int, ...]
        ``()`` for a 2D image, ``(z,)`` for a 3D stack.
    points : (N, 2) float, (row, col)
    point_labels : (N,) int, 1 positive / 0 negative
    box : (4,) float (min_row, min_col, max_row, max_col) or None
    """

    object_id: int
    index: tuple[int, ...]
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    point_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    box: np.ndarray | None = None


@dataclass
class _Row:
    kind: str  # "point" | "box"
    z: int | None
    values: tuple[float, ...]
    label: int
    obj: int | None


def _number(text: Any, where: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise PromptFileError(f"{where}: {text!r} is not a number") from None
    if not np.isfinite(value):
        raise PromptFileError(f"{where}: {text!r} is not a finite number")
    return value


def _integer(text: Any, where: str) -> int:
    value = _number(text, where)
    if value != int(value):
        raise PromptFileError(f"{where}: {text!r} must be a whole number")
    return int(value)


def _own_rows(records: Sequence[Mapping[str, Any]], cols: Iterable[str], name: str) -> list[_Row]:
    cols = set(cols)
    kind = "box" if set(BOX_COLS) <= cols else "point" if set(POINT_COLS) <= cols else None
    allowed = set(BOX_COLS if kind == "box" else POINT_COLS) | set(OPTIONAL)
    unknown = sorted(cols - allowed)
    if kind is None or unknown or (kind == "box" and "label" in cols):
        got = ",".join(sorted(cols)) or "none"
        raise PromptFileError(f"{name}: columns {got} are not a prompt file; {FORMATS}")
    coords = BOX_COLS if kind == "box" else POINT_COLS
    rows = []
    for i, rec in enumerate(records, start=1):
        where = f"{name} row {i}"
        label = _integer(rec.get("label", 1), where) if "label" in cols else 1
        if label not in (0, 1):
            raise PromptFileError(f"{where}: label must be 1 (positive) or 0 (negative), got {label}")
        rows.append(_Row(
            kind, _integer(rec["z"], where) if "z" in cols else None,
            tuple(_number(rec[c], where) for c in coords), label,
            _integer(rec["object"], where) if str(rec.get("object", "")).strip() else None,
        ))
    return rows


def _napari_points(records: Sequence[Mapping[str, Any]], axes: list[str], name: str) -> list[_Row]:
    rows = []
    for i, rec in enumerate(records, start=1):
        where = f"{name} row {i}"
        pos = [_number(rec[a], where) for a in axes]
        label = _integer(rec["label"], where) if "label" in rec else 1
        obj = _integer(rec["object"], where) if str(rec.get("object", "")).strip() else None
        z = _integer(round(pos[0]), where) if len(pos) == 3 else None
        rows.append(_Row("point", z, tuple(pos[-2:]), label, obj))
    return rows


def _napari_shapes(records: Sequence[Mapping[str, Any]], axes: list[str], name: str) -> list[_Row]:
    shapes: dict[str, list[list[float]]] = defaultdict(list)
    types: dict[str, str] = {}
    for i, rec in enumerate(records, start=1):
        shapes[rec["index"]].append([_number(rec[a], f"{name} row {i}") for a in axes])
        types[rec["index"]] = rec["shape-type"]
    rows = []
    for index, vertices in shapes.items():
        if types[index] not in ("rectangle", "ellipse", "polygon"):
            raise PromptFileError(
                f"{name}: shape {index} is a {types[index]}; use rectangles (boxes) as prompts"
            )
        v = np.asarray(vertices)
        z = None
        if v.shape[1] == 3:
            if np.ptp(v[:, 0]) > 0.5:
                raise PromptFileError(f"{name}: shape {index} is not on a single slice")
            z = int(round(v[0, 0]))
        (r0, c0), (r1, c1) = v[:, -2:].min(axis=0), v[:, -2:].max(axis=0)
        rows.append(_Row("box", z, (r0, c0, r1, c1), 1, None))
    return rows


def _rows_from_records(records: list[dict[str, Any]], cols: list[str], name: str) -> list[_Row]:
    axes = sorted((c for c in cols if c.startswith("axis-")), key=lambda c: int(c[5:]))
    if axes and len(axes) not in (2, 3):
        raise PromptFileError(
            f"{name}: a napari layer with {len(axes)} dimensions; napari-sam prompts are 2D or 3D"
        )
    if axes and "shape-type" in cols:
        return _napari_shapes(records, axes, name)
    if axes:
        return _napari_points(records, axes, name)
    return _own_rows(records, cols, name)


def _read_rows(path: Path) -> list[_Row]:
    name = path.name
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise PromptFileError(f"{name} is not valid JSON ({err})") from None
        if not isinstance(data, dict) or not set(data) <= {"points", "boxes"} or not data:
            raise PromptFileError(f'{name}: expected a JSON object with "points" and/or "boxes"')
        rows = []
        for key, records in data.items():
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise PromptFileError(f'{name}: "{key}" must be a list of objects')
            cols = sorted({c for r in records for c in r})
            if records and any(set(r) != set(cols) for r in records):
                raise PromptFileError(f'{name}: every entry of "{key}" needs the same keys')
            part = _own_rows(records, cols, f"{name} {key}") if records else []
            if part and part[0].kind != {"points": "point", "boxes": "box"}[key]:
                raise PromptFileError(f'{name}: "{key}" entries have the columns of {part[0].kind}s')
            rows += part
        return rows
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            records = [{k.strip(): v for k, v in rec.items() if k is not None} for rec in reader]
    except (UnicodeDecodeError, csv.Error) as err:
        raise PromptFileError(f"{name} is not a CSV text file ({err.__class__.__name__})") from None
    if not cols:
        raise PromptFileError(f"{name} is empty; {FORMATS}")
    return _rows_from_records(records, cols, name)


def read_prompts(paths: Sequence[str | os.PathLike[str]], ndim: int) -> list[ObjectPrompt]:
    """Read prompt files into per-object, per-slice prompts.

    Parameters
    ----------
    paths
        CSV or JSON files (formats in the module docstring); objects with the same ``object``
        ID in different files are merged.
    ndim
        Spatial dimensions of the image: 2 (rows without z) or 3 (every row needs a z).

    Returns
    -------
    list[ObjectPrompt]
        Sorted by object ID, then slice.

    Raises
    ------
    FileNotFoundError, PromptFileError
    """
    groups: dict[tuple[int, tuple[int, ...]], ObjectPrompt] = {}
    auto: list[tuple[str, list[_Row]]] = []
    explicit: list[_Row] = []
    for p in map(Path, paths):
        if not p.is_file():
            raise FileNotFoundError(f"prompt file {p} does not exist")
        rows = _read_rows(p)
        if not rows:
            raise PromptFileError(f"{p.name} contains no prompts")
        for row in rows:
            if (row.z is None) != (ndim == 2):
                need = "needs a z column (the image is 3D)" if ndim == 3 else "has a z column but the image is 2D"
                raise PromptFileError(f"{p.name} {need}")
        explicit += [r for r in rows if r.obj is not None]
        auto.append((p.name, [r for r in rows if r.obj is None]))
    next_id = max((r.obj for r in explicit), default=0) + 1
    for row in explicit:
        if row.obj is not None and row.obj < 1:
            raise PromptFileError(f"object IDs must be 1 or more, got {row.obj}")
    for _, rows in auto:  # a new object per box and per positive point, in file order
        for row in rows:
            if row.kind == "box" or row.label == 1:
                row.obj, next_id = next_id, next_id + 1
    for row in explicit + [r for _, rows in auto for r in rows if r.obj is not None]:
        _add(groups, row, int(row.obj or 0))
    for name, rows in auto:  # negative points without an object: for every object of their slice
        for row in rows:
            if row.obj is not None:
                continue
            index = () if row.z is None else (row.z,)
            targets = [k for k in groups if k[1] == index and any(r.obj == k[0] for r in rows)]
            if not targets:
                where = f"z={row.z}, " if row.z is not None else ""
                raise PromptFileError(
                    f"{name}: the negative point ({where}row={row.values[0]:g}, col={row.values[1]:g}) "
                    "has no object on its slice; add an object column to say which object it belongs to"
                )
            for key in targets:
                _add(groups, row, key[0])
    return [groups[k] for k in sorted(groups)]


def _add(groups: dict[tuple[int, tuple[int, ...]], ObjectPrompt], row: _Row, obj_id: int) -> None:
    index = () if row.z is None else (row.z,)
    obj = groups.setdefault((obj_id, index), ObjectPrompt(obj_id, index))
    if row.kind == "box":
        if obj.box is not None:
            raise PromptFileError(f"object {obj_id} has two boxes on one slice; give one")
        obj.box = np.asarray(row.values, dtype=float)
    else:
        obj.points = np.vstack([obj.points, [row.values]])
        obj.point_labels = np.append(obj.point_labels, row.label).astype(int)


def check_in_stack(prompts: Sequence[ObjectPrompt], index_shape: tuple[int, ...]) -> None:
    """Raise PromptFileError for a prompt on a slice outside the stack (rows/cols are checked
    by the predictor)."""
    for obj in prompts:
        if obj.index and not 0 <= obj.index[0] < index_shape[0]:
            raise PromptFileError(
                f"object {obj.object_id}: z={obj.index[0]} is outside the stack of "
                f"{index_shape[0]} slices"
            )
