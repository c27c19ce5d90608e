"""The parts of :class:`~napari_sam.segment.Segmenter` that walk over slices: propagation and
segment-everything on a stack, on top of the stack's :class:`StackEmbeddings`."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from napari_sam.labels import LabelScheme
from napari_sam.predictor import Predictor
from napari_sam.preprocess import as_yxc, to_network_range
from napari_sam.segment._util import Index, Progress, check_cancel, normalize_index, report
from napari_sam.segment.everything import EverythingParams, MaskRecord, generate_masks
from napari_sam.segment.instances import paint_records, write_instances
from napari_sam.segment.linking import link_slices
from napari_sam.segment.masks import bounding_box, enlarge_box, interior_points
from napari_sam.segment.propagation import PropagationReport, SliceResult, StopCriteria, propagate_positions

if TYPE_CHECKING:  # pragma: no cover
    from napari_sam.segment.segmenter import Segmenter

# What the previous slice's mask gives the next slice by default: two interior points and its
# low-res logits as the mask prompt ("box", the enlarged bounding box, can be added). Chosen with
# the propagation benchmark on synthetic tiny-synth stacks (docs/benchmarks_segment.md): the
# logits matter most; points + logits was the most robust to the stop criteria.
DEFAULT_PROMPTS: tuple[str, ...] = ("points", "mask")
PROMPT_KINDS = ("box", "points", "mask")
N_INTERIOR_POINTS = 2
BOX_GROWTH = 0.1
_OUTSIDE = -20.0  # logit of pixels outside the tile a prediction was made on
# Drop parts of a propagated mask that do not touch the previous slice's mask (a neighbour the
# model leaked into); see docs/benchmarks_segment.md.
KEEP_OVERLAPPING = True


def _overlapping_parts(mask: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """The parts (8-connected) of ``mask`` that overlap ``previous``; all of it if none does."""
    from scipy import ndimage as ndi

    parts, n = ndi.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n <= 1:
        return mask
    touching = np.unique(parts[previous & mask])
    touching = touching[touching > 0]
    if touching.size == 0:
        return mask
    return np.isin(parts, touching)


def place(mask: np.ndarray, off: Any, plane_shape: tuple[int, int]) -> np.ndarray:
    """A tile-frame (h, w) array placed at ``off`` in a (Y, X) plane of zeros/False."""
    r, c = int(off[0]), int(off[1])
    if (r, c) == (0, 0) and mask.shape == tuple(plane_shape):
        return mask
    full = np.zeros(plane_shape, dtype=mask.dtype)
    full[r : r + mask.shape[0], c : c + mask.shape[1]] = mask
    return full


# -- propagation ---------------------------------------------------------------------------------
def _annotations(
    seg: Segmenter, mask: Any, index: Any, annotations: dict[Any, Any] | None, ax: int
) -> tuple[Index, dict[int, np.ndarray]]:
    shape = seg.index_shape
    base: Index | None = None
    found: dict[int, np.ndarray] = {}
    if mask is not None:
        if index is None:
            raise ValueError("give index= of the annotated slice, e.g. index=(z,)")
        base = seg._index(index)
        found[base[ax]] = mask
    elif index is not None:
        base = seg._index(index)
    for key, m in (annotations or {}).items():
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if base is None:
                if len(shape) > 1:
                    raise ValueError("annotation positions need index= to fix the other leading axes")
                base = (0,)
            full = base[:ax] + (int(key) % shape[ax],) + base[ax + 1 :]
            normalize_index(full, shape)
        else:
            full = seg._index(key)
            if base is None:
                base = full
            if full[:ax] + full[ax + 1 :] != base[:ax] + base[ax + 1 :]:
                raise ValueError(f"annotation {full} is not on the same line through axis {ax} as {base}")
        found[full[ax]] = m
    if base is None or not found:
        raise ValueError("propagate needs an annotated mask (mask= with index=, or annotations=)")
    for pos, m in list(found.items()):
        arr = np.asarray(m)
        if arr.dtype != bool or arr.shape != seg.plane_shape:
            raise ValueError(
                f"the mask of slice {pos} must be a boolean array of the slice's shape {seg.plane_shape}, "
                f"got {arr.dtype} {arr.shape}"
            )
        if not arr.any():
            raise ValueError(f"the mask of slice {pos} is empty: nothing to follow")
        found[pos] = arr
    return base, found


def _slice_predictor(
    seg: Segmenter, index_at: Callable[[int], Index], prompts: tuple[str, ...], lo: int, hi: int
) -> Callable[[int, SliceResult], SliceResult]:
    plane = seg.plane_shape
    view = seg.embeddings
    model = seg.model

    def predict(pos: int, prev: SliceResult) -> SliceResult:
        box = bounding_box(prev.mask)
        if box is None:
            return SliceResult(np.zeros(plane, dtype=bool), 0.0)
        grown = enlarge_box(box, plane, BOX_GROWTH)
        pts = interior_points(prev.mask, N_INTERIOR_POINTS) if "points" in prompts else None
        predictor, off = view.predictor(index_at(pos), points=pts, box=grown)
        if isinstance(prev.state, tuple):  # encode the next slice in the background meanwhile
            ahead = pos + (1 if pos > prev.state[0] else -1)
            if lo <= ahead < hi:
                view.prefetch(index_at(ahead), radius=0)
        shift = np.asarray(off, dtype=np.float64)
        mask_prompt = None
        if "mask" in prompts:
            if isinstance(prev.state, tuple) and prev.state[2] == tuple(off):
                mask_prompt = prev.state[1]
            else:
                h, w = predictor.image_shape
                mask_prompt = prev.mask[off[0] : off[0] + h, off[1] : off[1] + w]
        pred = predictor.predict(
            points=None if pts is None else pts - shift,
            point_labels=None,
            box=grown - np.tile(shift, 2) if "box" in prompts else None,
            mask_input=mask_prompt,
            multimask=False,
        )
        emb = predictor.embedding
        low = pred.logits[0]

        def full_logits() -> np.ndarray:
            up = model.upscale_logits(torch.from_numpy(low)[None, None], emb.input_size, emb.original_size)
            tile = up[0, 0].numpy()
            out = np.full(plane, _OUTSIDE, dtype=np.float32)
            out[off[0] : off[0] + tile.shape[0], off[1] : off[1] + tile.shape[1]] = tile
            return out

        full = place(pred.masks[0], off, plane)
        if KEEP_OVERLAPPING:
            full = _overlapping_parts(full, prev.mask)
        return SliceResult(full, float(pred.scores[0]), (pos, low, tuple(off)), full_logits)

    return predict


def propagate(
    seg: Segmenter,
    mask: Any,
    index: Any,
    stop_iou: float,
    max_area_change: float,
    z_range: tuple[int, int] | None,
    annotations: dict[Any, Any] | None,
    progress: Progress | None,
    cancel: Any,
    axis: int | None,
    prompts: tuple[str, ...],
) -> tuple[np.ndarray, PropagationReport]:
    shape = seg.index_shape
    if not shape:
        raise ValueError("propagate needs a stack ((Z, Y, X) or more); this is a single 2D image")
    ax = len(shape) - 1 if axis is None else int(axis)
    if not -len(shape) <= ax < len(shape):
        raise ValueError(f"axis {axis} is not a leading axis of a stack with leading shape {shape}")
    ax %= len(shape)
    prompts = tuple(prompts)
    if not prompts or any(p not in PROMPT_KINDS for p in prompts):
        raise ValueError(f"prompts must be a non-empty tuple of {PROMPT_KINDS}, got {prompts!r}")
    base, found = _annotations(seg, mask, index, annotations, ax)
    n = shape[ax]
    lo, hi = (0, n) if z_range is None else (int(z_range[0]), int(z_range[1]))
    if not 0 <= lo < hi <= n:
        raise ValueError(f"z_range must be (start, stop) with 0 <= start < stop <= {n}, got {z_range}")
    outside = [p for p in found if not lo <= p < hi]
    if outside:
        raise ValueError(f"annotated slices {outside} lie outside z_range [{lo}, {hi})")

    def index_at(pos: int) -> Index:
        return base[:ax] + (pos,) + base[ax + 1 :]

    stop = StopCriteria(min_iou=stop_iou, max_area_change=max_area_change)
    predict = _slice_predictor(seg, index_at, prompts, lo, hi)
    starts = {pos: SliceResult(m) for pos, m in found.items()}
    return propagate_positions(predict, starts, (n, *seg.plane_shape), stop, lo, hi, progress, cancel)


# -- segment everything --------------------------------------------------------------------------
def _grid_points(plane_shape: tuple[int, int], n_base: int, params: EverythingParams) -> int:
    """Grid points of one plane over all its regions (tiles or the plane, then crops)."""
    from napari_sam.segment.amg import crop_boxes

    total = 0
    for layer, _ in [(0, None)] * n_base + [x for x in crop_boxes(plane_shape, params.crop_n_layers) if x[0]]:
        side = max(1, int(params.points_per_side / params.crop_n_points_downscale_factor**layer))
        total += side * side
    return total


def _base_regions(seg: Segmenter) -> list[tuple[int, int, int, int]]:
    """The whole plane, or the tiles of a plane embedded as tiles."""
    return [tuple(int(v) for v in t) for t in seg.embeddings.tiles()]  # type: ignore[misc]


def masks_of_plane(
    seg: Segmenter, idx: Index, params: EverythingParams, cancel: Any, on_points: Callable[[int], None] | None
) -> list[MaskRecord]:
    view = seg.embeddings
    base = _base_regions(seg)
    plane_data: list[np.ndarray] = []

    def predictor_for(region: tuple[int, int, int, int]) -> Predictor:
        if region in base:  # the cached embedding of the plane, or of one of its tiles
            predictor, _ = view.predictor(idx, tile=base.index(region))
            return predictor  # type: ignore[no-any-return]
        if not plane_data:
            plane_data.append(as_yxc(np.asarray(view.plane(idx))))
        crop = plane_data[0][region[0] : region[2], region[1] : region[3]]
        emb = seg.cache.encode([to_network_range(crop, view.norm)])[0]
        predictor = Predictor(seg.model)
        predictor.set_embedding(emb)
        return predictor

    return generate_masks(predictor_for, seg.plane_shape, params, base, cancel, on_points)


def everything(
    seg: Segmenter,
    index: Any,
    params: EverythingParams,
    progress: Progress | None,
    cancel: Any,
    max_area_fraction: float,
    link_iou: float,
    scheme: LabelScheme | None,
    class_id: int | None,
    out: np.ndarray | None,
    mode: str,
) -> np.ndarray:
    shape = seg.index_shape
    if index is None:
        prefix: Index = ()
    else:
        raw = (index,) if isinstance(index, (int, np.integer)) else tuple(index)
        if len(raw) > len(shape):
            raise ValueError(f"index {raw} has more entries than the stack's leading axes {shape}")
        prefix = normalize_index(raw, shape[: len(raw)])
    rest = shape[len(prefix) :]
    result_shape = (*rest, *seg.plane_shape)
    if not 0.0 < max_area_fraction <= 1.0:
        raise ValueError(f"max_area_fraction must be in (0, 1], got {max_area_fraction}")
    if out is not None:
        if not isinstance(out, np.ndarray) or out.shape != result_shape:
            raise ValueError(f"out must be a numpy label array of shape {result_shape}")
    indices = [prefix + tail for tail in itertools.product(*(range(s) for s in rest))]
    total = len(indices) * _grid_points(seg.plane_shape, len(_base_regions(seg)), params)
    done = 0

    def on_points(n: int) -> None:
        nonlocal done
        done += n
        report(progress, done, total)

    local = np.zeros((len(indices), *seg.plane_shape), dtype=np.uint32)
    for i, idx in enumerate(indices):
        check_cancel(cancel, "segment everything")
        if i + 1 < len(indices):
            seg.embeddings.prefetch(indices[i + 1], radius=0)
        records = masks_of_plane(seg, idx, params, cancel, on_points)
        local[i] = paint_records(
            records, seg.plane_shape, max(1, params.min_mask_region_area), max_area_fraction, params.min_visible_fraction
        )
    if rest:
        runs = local.reshape(-1, rest[-1], *seg.plane_shape)
        linked = np.zeros(runs.shape, dtype=np.uint64)
        next_id = 1
        for g in range(runs.shape[0]):
            linked[g] = link_slices(runs[g], link_iou, first_id=next_id)
            next_id = max(next_id, int(linked[g].max()) + 1)
        labels = linked.reshape(result_shape)
    else:
        labels = local[0]
    target = out if out is not None else np.zeros(result_shape, dtype=np.uint32)
    write_instances(target, labels, scheme or LabelScheme(), class_id, mode)
    report(progress, total, total)
    return target
