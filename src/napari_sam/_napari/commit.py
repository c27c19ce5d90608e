"""Writing masks into a Labels layer through its own editing path, so napari's undo works.

A commit is planned on numpy arrays (:func:`plan_object`, :func:`plan_instances`: pure, tested
without a viewer) and applied with ``layer.data_setitem`` inside ``layer.block_history()``:
one commit, however many slices it touches, is one undo step, and ``layer.undo()`` restores
the previous labels exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_sam.labels import LabelScheme, LabelSpaceFullError, Mode, write_mask

if TYPE_CHECKING:  # pragma: no cover
    from napari.layers import Labels

Index = tuple[int, ...]


@dataclass(frozen=True)
class CommitPlan:
    """Changes to a label array.

    Attributes
    ----------
    indices : tuple of (M,) int arrays
        Fancy index into the full label array (one array per axis) of the pixels that change.
    values : (M,) array of the label dtype
        Their new values.
    label_ids : tuple of int
        The object IDs written (one for an object, one per object for segment-everything).
    """

    indices: tuple[np.ndarray, ...]
    values: np.ndarray
    label_ids: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(self.values.size)


def _region(target: np.ndarray, where: Index, shape: Sequence[int]) -> np.ndarray:
    region = target[where] if where else target
    if tuple(region.shape) != tuple(shape):
        raise ValueError(
            f"a mask of shape {tuple(shape)} does not fit the labels at {where} (shape "
            f"{region.shape}); the labels layer must have the image's shape"
        )
    return region


def _plan(where: Index, region: np.ndarray, new: np.ndarray, ids: tuple[int, ...]) -> CommitPlan:
    local = np.nonzero(new != region)
    n = local[0].size if local else 0
    lead = tuple(np.full(n, w, dtype=np.intp) for w in where)
    return CommitPlan(lead + tuple(local), new[local], ids)


def plan_object(
    target: np.ndarray,
    mask: np.ndarray,
    where: Index,
    scheme: LabelScheme,
    class_id: int | None,
    mode: Mode = "keep",
    label_id: int | None = None,
) -> CommitPlan:
    """Plan writing one object.

    Parameters
    ----------
    target : integer array, e.g. (Y, X) or (Z, Y, X)
        The whole label array (read only here).
    mask : bool array
        The object on ``target[where]``: (Y, X) with ``where=(z,)``, or a (Z, Y, X) volume
        with ``where=()`` (a propagated object), etc.
    where : tuple of int
        Leading index of the region the mask covers; ``()`` for the whole array.
    scheme : LabelScheme
    class_id : int or None
        The class of a new object (panoptic); None for plain labels.
    mode : {"keep", "replace", "same_class"}
        "keep" (default) never overwrites other objects.
    label_id : int, optional
        Refine an existing object: its pixels in the region are replaced by ``mask`` under the
        same ID (class and instance kept). Default: a new instance of ``class_id``, numbered
        after every instance of that class in the whole ``target``.

    Returns
    -------
    CommitPlan
    """
    region = _region(target, where, np.shape(mask))
    new = region.copy()
    if label_id is None:
        instance = scheme.next_instance(target, class_id)
    else:
        label_id = int(label_id)
        if label_id <= 0:
            raise ValueError("refine needs a label ID > 0 (the selected label is background)")
        if scheme.is_panoptic:
            class_id, instance = divmod(label_id, scheme.divisor or 1)
            if class_id not in scheme.classes:
                raise ValueError(
                    f"label {label_id} has class {class_id}, which is not in the class table; "
                    "add the class or use the right divisor"
                )
        else:
            class_id, instance = None, label_id
        new[new == label_id] = 0
    written = write_mask(new, mask, scheme, class_id, mode=mode, instance_id=instance)
    return _plan(where, region, new, (int(written),))


def plan_instances(
    target: np.ndarray,
    instances: np.ndarray,
    where: Index,
    scheme: LabelScheme,
    class_id: int | None,
    mode: Mode = "keep",
) -> CommitPlan:
    """Plan writing many objects (segment-everything output) as new instances.

    ``instances`` holds object numbers (0 = none) on ``target[where]``; each object becomes a new
    instance of ``class_id`` (or a new plain ID), numbered in order after the existing ones.
    In "keep" mode only background pixels change.
    """
    region = _region(target, where, np.shape(instances))
    inst = np.asarray(instances)
    objects, inverse = np.unique(inst, return_inverse=True)
    inverse = inverse.reshape(inst.shape)
    has_zero = objects.size > 0 and objects[0] == 0
    n = int(objects.size - has_zero)
    if n == 0:
        empty = tuple(np.zeros(0, np.intp) for _ in range(target.ndim))
        return CommitPlan(empty, np.zeros(0, target.dtype), ())
    first = scheme.next_instance(target, class_id)
    last = first + n - 1
    if last > scheme.max_instance(target.dtype):
        raise LabelSpaceFullError(
            f"{n} new objects need instance IDs {first}..{last}, beyond the limit "
            f"{scheme.max_instance(target.dtype)}; use a larger divisor or delete objects"
        )
    ids = [scheme.encode(class_id, i) for i in range(first, last + 1)]
    if ids[-1] > np.iinfo(target.dtype).max:
        raise TypeError(f"label ID {ids[-1]} does not fit labels of dtype {target.dtype}; use uint32")
    lut = np.zeros(objects.size, dtype=target.dtype)
    lut[int(has_zero):] = np.asarray(ids, dtype=target.dtype)
    paint = inst > 0
    if mode == "keep":
        paint &= region == 0
    elif mode == "same_class" and scheme.is_panoptic and class_id is not None:
        low = class_id * int(scheme.divisor or 1)
        paint &= (region == 0) | ((region >= low) & (region < low + int(scheme.divisor or 1)))
    new = region.copy()
    new[paint] = lut[inverse[paint]]
    return _plan(where, region, new, tuple(int(i) for i in ids))


def apply_plans(layer: Labels, plans: Sequence[CommitPlan]) -> None:
    """Apply ``plans`` to a Labels layer as one undoable edit (``layer.undo()`` reverts it).

    Uses the layer's own editing path (``data_setitem`` inside ``block_history``), so the
    edit is in napari's undo history (Ctrl-Z on the layer) and the display updates.
    """
    plans = [p for p in plans if p.size]
    if not plans:
        return
    with layer.block_history():
        for plan in plans:
            layer.data_setitem(plan.indices, plan.values)
