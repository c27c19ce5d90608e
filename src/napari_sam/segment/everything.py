"""Automatic mask generation on one plane ("segment everything"), after the SAM paper.

A grid of single-point prompts is decoded in batches on a cached image embedding; each point
gives SAM's 3 ambiguity masks. Masks are kept when their predicted IoU is above
``pred_iou_thresh`` and their stability score (IoU of the mask thresholded at +/- an offset around
the mask threshold) is at least ``stability_score_thresh``; duplicates are removed by box
non-maximum suppression, first within each crop (higher predicted IoU wins), then between crops
(the smaller crop wins). Optional crop layers re-run the grid on zoomed-in crops to find small
objects; masks touching an inner crop edge are dropped there. Optional clean-up removes small
islands and fills small holes, then suppresses duplicates again (untouched masks win).

Differences from the reference ``SamAutomaticMaskGenerator`` that change speed, not results:
the predicted-IoU filter runs on the low-resolution output before upscaling (the reference
upscales every mask first); a mask is upscaled only inside the window where its logits can
exceed the lower stability cut (:mod:`napari_sam.segment._upscale`, exact there); masks are kept
as boolean crops of their bounding boxes instead of run-length encodings; NMS is a vectorised
greedy NMS; and the prompt-independent part of the decoder's first block is computed once per
image (:mod:`napari_sam.segment._decoder`). One option changes results and is off by default:
``skip_covered`` (see :class:`EverythingParams`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from napari_sam.predictor import Predictor
from napari_sam.segment._util import check_cancel
from napari_sam.segment._decoder import PointDecoder
from napari_sam.segment._upscale import Upscaler
from napari_sam.segment.amg import box_nms, crop_boxes, near_crop_edge, point_grid
from napari_sam.segment.masks import remove_small_regions

__all__ = ["EverythingParams", "MaskRecord", "everything_params", "generate_masks"]

Region = tuple[int, int, int, int]  # (row0, col0, row1, col1), end exclusive
# Returns a Predictor whose image is the given region of the plane (cached or freshly encoded).
PredictorFor = Callable[[Region], Predictor]


@dataclass(frozen=True)
class EverythingParams:
    """Parameters of automatic mask generation (defaults: the paper's, suited to microscopy too).

    Attributes
    ----------
    points_per_side : int
        The prompt grid is points_per_side x points_per_side over the plane (32: a point every
        ~8 px of a 256 px plane, every 32 px of a 1024 px plane; raise it for small, dense
        objects such as nuclei in a large field). A plane embedded as tiles gets one grid per
        tile.
    batch_size : int
        Points decoded per model call.
    pred_iou_thresh : float
        Keep masks whose predicted IoU is above this (0: no filter).
    stability_score_thresh : float
        Keep masks whose stability score is at least this (0: no filter). Empty masks are
        never kept.
    stability_score_offset : float
        Logit offset of the stability score.
    box_nms_thresh : float
        Box IoU above which the lower-scoring of two masks is dropped.
    crop_n_layers : int
        0: the whole plane only. n: also 2x2, 4x4, ... crops (n layers), for small objects.
    crop_nms_thresh : float
        Box IoU for removing duplicates between crops.
    crop_overlap_ratio : float
        Overlap of neighbouring crops, as a fraction of the plane's shorter side.
    crop_n_points_downscale_factor : int
        Points per side in crop layer i = points_per_side / factor**i.
    min_mask_region_area : int
        If > 0, remove islands and fill holes smaller than this (pixels) in every mask.
    min_visible_fraction : float
        When the masks become labels (smaller masks win overlaps), drop a mask left with less
        than this fraction of its pixels: a larger duplicate or a merge of objects already
        found. 0 (default) keeps every mask with a visible pixel.
    best_mask_only : bool
        Keep only the mask of highest predicted IoU of each point's three (whole, part,
        subpart). False (default) keeps all three, as the paper; True suits a model whose
        part/subpart outputs are not trained to mean anything (``tiny-synth``: nuclei have
        no parts).
    require_prompt_inside : bool
        Keep a mask only if it contains the grid point that prompted it. False (default) as the
        paper; True removes the answers a model gives to clicks on background, which a model
        trained only on clicks inside objects (such as ``tiny-synth``) does not flag by a low
        predicted IoU: on held-out synthetic nuclei 96 % of its masks from background points
        miss their own point, 7 % of those from points on objects do.
    skip_covered : bool
        False (default): decode every grid point, as the paper (and the reference
        implementation). True: decode the grid coarse to fine (every 8th point, then every 4th,
        2nd, the rest) and skip points inside a mask already kept (the smallest kept mask of
        each prompt); such a point mostly returns that mask again, a duplicate NMS removes.
        Faster where objects or a uniform background cover the plane, but it can miss masks
        only a skipped point would give (see docs/benchmarks_segment.md).
    """

    points_per_side: int = 32
    batch_size: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    min_visible_fraction: float = 0.0
    best_mask_only: bool = False
    require_prompt_inside: bool = False
    skip_covered: bool = False

    def __post_init__(self) -> None:
        if self.points_per_side < 1:
            raise ValueError(f"points_per_side must be >= 1, got {self.points_per_side}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("box_nms_thresh", "crop_nms_thresh", "stability_score_thresh"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.crop_n_layers < 0 or self.crop_n_points_downscale_factor < 1:
            raise ValueError("crop_n_layers must be >= 0 and crop_n_points_downscale_factor >= 1")


def given_over_recommended(recommended: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """The precedence of segment-everything settings: a value ``given`` (not None) wins over the
    model's ``recommended`` one; keys in neither are left out (their defaults apply)."""
    return {**recommended, **{k: v for k, v in given.items() if v is not None}}


def everything_params(model: object = None, **given: Any) -> EverythingParams:
    """Segment-everything parameters: ``given`` (where not None), else the model's recommended
    values (``model.everything_defaults``, set by :func:`napari_sam.load_model` from the
    registry), else the :class:`EverythingParams` defaults."""
    return EverythingParams(**given_over_recommended(getattr(model, "everything_defaults", None) or {}, given))


@dataclass
class MaskRecord:
    """One mask found by :func:`generate_masks`, in plane coordinates.

    Attributes
    ----------
    box : (4,) int (min_row, min_col, max_row, max_col), inclusive
    patch : (h, w) bool, the mask inside ``box``
    predicted_iou, stability_score : float
    point : (2,) (row, col) of the prompt that produced it
    crop : (row0, col0, row1, col1) of the crop it was found in (end exclusive)
    """

    box: np.ndarray
    patch: np.ndarray
    predicted_iou: float
    stability_score: float
    point: np.ndarray
    crop: Region

    @property
    def area(self) -> int:
        return int(self.patch.sum())

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The full (Y, X) bool mask on a plane of ``shape``."""
        out = np.zeros(shape, dtype=bool)
        r0, c0, r1, c1 = (int(v) for v in self.box)
        out[r0 : r1 + 1, c0 : c1 + 1] = self.patch
        return out


@dataclass
class _Candidate:
    box: np.ndarray  # (4,) inclusive, crop frame
    patch: np.ndarray
    iou: float
    stability: float
    prompt: int  # index of the prompt in its batch


def _decode_batch(
    predictor: Predictor, points: np.ndarray, params: EverythingParams, upscaler: Upscaler, decoder: PointDecoder
) -> list[_Candidate]:
    """The masks of a batch of single-point prompts that pass the quality filters."""
    model = predictor.model
    coords = predictor.points_to_model(points)[:, None, :]
    labels = torch.ones(coords.shape[:2], dtype=torch.int64, device=coords.device)
    low, iou = decoder(coords, labels)
    k = low.shape[1]
    best = iou.float().argmax(dim=1).cpu() if params.best_mask_only and k > 1 else None
    low = low.float().flatten(0, 1).cpu()
    iou = iou.float().flatten().cpu()
    which = np.repeat(np.arange(len(points)), k)
    # as the paper's generator: a threshold of 0 (or below) turns its filter off
    passing = iou > params.pred_iou_thresh
    if params.pred_iou_thresh <= 0:
        passing = torch.ones_like(passing)
    if best is not None:
        passing &= (torch.arange(k).repeat(len(points)) == best.repeat_interleave(k))
    keep = torch.nonzero(passing).flatten().tolist()  # filtered before any upscaling
    thr, off = float(model.mask_threshold), float(params.stability_score_offset)
    out = []
    for i in keep:
        found = upscaler.window(low[i], thr - off)  # outside it, logits <= thr - off: uncounted
        if found is None:
            continue
        y0, x0, win = found
        inner = int(torch.count_nonzero(win > thr + off))
        outer = int(torch.count_nonzero(win > thr - off))
        stability = inner / outer if outer else 0.0
        if params.stability_score_thresh > 0 and stability < params.stability_score_thresh:
            continue
        mask = (win > thr).numpy()
        if params.require_prompt_inside:
            r, c = int(points[which[i], 0]) - y0, int(points[which[i], 1]) - x0
            if not (0 <= r < mask.shape[0] and 0 <= c < mask.shape[1] and mask[r, c]):
                continue
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            continue
        patch = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        box = np.array([y0 + rows[0], x0 + cols[0], y0 + rows[-1], x0 + cols[-1]], dtype=np.int64)
        out.append(_Candidate(box, np.ascontiguousarray(patch), float(iou[i]), stability, int(which[i])))
    return out


def _passes(n_side: int) -> list[np.ndarray]:
    """Grid point indices split into coarse-to-fine passes: every 8th row and column (centred),
    then every 4th, 2nd, and the rest. Each point is in exactly one pass."""
    i, j = np.divmod(np.arange(n_side * n_side), n_side)
    level = np.full(i.shape, 3)
    for lv, stride in ((2, 2), (1, 4), (0, 8)):
        on = (i % stride == stride // 2) & (j % stride == stride // 2)
        level[on] = lv
    return [np.flatnonzero(level == lv) for lv in range(4) if (level == lv).any()]


def _records_for_crop(
    predictor: Predictor,
    crop: Region,
    n_side: int,
    plane_shape: tuple[int, int],
    params: EverythingParams,
    cancel: object,
    on_points: Callable[[int], None] | None,
) -> list[MaskRecord]:
    ch, cw = crop[2] - crop[0], crop[3] - crop[1]
    grid = point_grid(n_side) * np.array([ch, cw])
    offset = np.array([crop[0], crop[1], crop[0], crop[1]])
    is_whole = crop == (0, 0, *plane_shape)
    covered = np.zeros((ch, cw), dtype=bool)
    records: list[MaskRecord] = []
    passes = _passes(n_side) if params.skip_covered else [np.arange(len(grid))]
    he, we = predictor.model.prompt_encoder.image_embedding_size
    upscaler = Upscaler(predictor, (4 * he, 4 * we))
    decoder = PointDecoder(predictor.model, predictor.embedding.features)
    for members in passes:
        todo = members
        if params.skip_covered:
            rc = np.clip(grid[members].astype(np.int64), 0, [ch - 1, cw - 1])
            todo = members[~covered[rc[:, 0], rc[:, 1]]]
            if on_points is not None and len(todo) < len(members):
                on_points(len(members) - len(todo))
        for start in range(0, len(todo), params.batch_size):
            check_cancel(cancel, "segment everything")
            batch = grid[todo[start : start + params.batch_size]]
            with torch.inference_mode():
                found = _decode_batch(predictor, batch, params, upscaler, decoder)
            if on_points is not None:
                on_points(len(batch))
            if not is_whole and found:
                boxes = torch.as_tensor(np.stack([c.box for c in found]) + offset)
                away = (~near_crop_edge(boxes, crop, plane_shape)).tolist()
                found = [c for c, ok in zip(found, away) if ok]
            smallest: dict[int, _Candidate] = {}
            for c in found:
                records.append(
                    MaskRecord(c.box + offset, c.patch, c.iou, c.stability, batch[c.prompt] + offset[:2], crop)
                )
                best = smallest.get(c.prompt)
                if best is None or c.patch.sum() < best.patch.sum():
                    smallest[c.prompt] = c
            for c in smallest.values():  # the most specific kept mask of each prompt covers
                r0, c0, r1, c1 = (int(v) for v in c.box)
                covered[r0 : r1 + 1, c0 : c1 + 1] |= c.patch
    if not records:
        return []
    boxes = torch.as_tensor(np.stack([r.box for r in records]), dtype=torch.float64)
    keep = box_nms(boxes, torch.tensor([r.predicted_iou for r in records]), params.box_nms_thresh)
    return [records[i] for i in keep.tolist()]


def _clean(records: list[MaskRecord], plane_shape: tuple[int, int], params: EverythingParams) -> list[MaskRecord]:
    """Remove small islands and fill small holes, then suppress new duplicates (untouched first)."""
    area = params.min_mask_region_area
    scores, out = [], []
    for rec in records:
        r0, c0, r1, c1 = (int(v) for v in rec.box)
        # one pixel of context, so background touching the box edge connects to the outside
        p0, q0 = max(r0 - 1, 0), max(c0 - 1, 0)
        p1, q1 = min(r1 + 2, plane_shape[0]), min(c1 + 2, plane_shape[1])
        window = np.zeros((p1 - p0, q1 - q0), dtype=bool)
        window[r0 - p0 : r1 + 1 - p0, c0 - q0 : c1 + 1 - q0] = rec.patch
        window, holes = remove_small_regions(window, area, mode="holes")
        window, islands = remove_small_regions(window, area, mode="islands")
        scores.append(0.0 if holes or islands else 1.0)
        if holes or islands:
            rows, cols = np.flatnonzero(window.any(1)), np.flatnonzero(window.any(0))
            box = np.array([rows[0] + p0, cols[0] + q0, rows[-1] + p0, cols[-1] + q0])
            rec = MaskRecord(
                box, window[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].copy(),
                rec.predicted_iou, rec.stability_score, rec.point, rec.crop,
            )
        out.append(rec)
    if not out:
        return out
    boxes = torch.as_tensor(np.stack([r.box for r in out]), dtype=torch.float64)
    keep = box_nms(boxes, torch.tensor(scores), max(params.box_nms_thresh, params.crop_nms_thresh))
    return [out[i] for i in sorted(keep.tolist())]


def generate_masks(
    predictor_for: PredictorFor,
    plane_shape: tuple[int, int],
    params: EverythingParams,
    base_regions: list[Region] | None = None,
    cancel: object = None,
    on_points: Callable[[int], None] | None = None,
) -> list[MaskRecord]:
    """All masks on one plane.

    Parameters
    ----------
    predictor_for : callable region -> Predictor
        A predictor whose image is that region of the plane (the cached embedding for the
        whole plane or its tiles, a fresh encoding for zoomed crops).
    plane_shape : (Y, X)
    params : EverythingParams
    base_regions : list of (row0, col0, row1, col1), optional
        The layer-0 regions: the whole plane (default) or, for a tiled plane, its tiles.
    cancel : cancel token, optional
    on_points : callable, optional
        Called with the number of grid points handled (decoded or skipped), for progress.

    Returns
    -------
    list of MaskRecord, in no particular order.
    """
    h, w = int(plane_shape[0]), int(plane_shape[1])
    layers = crop_boxes((h, w), params.crop_n_layers, params.crop_overlap_ratio)
    regions = [(0, r) for r in (base_regions or [(0, 0, h, w)])] + [x for x in layers if x[0] > 0]
    records: list[MaskRecord] = []
    for layer, region in regions:
        n_side = max(1, int(params.points_per_side / params.crop_n_points_downscale_factor**layer))
        predictor = predictor_for(region)
        records.extend(_records_for_crop(predictor, region, n_side, (h, w), params, cancel, on_points))
    if len(regions) > 1 and records:
        boxes = torch.as_tensor(np.stack([r.box for r in records]), dtype=torch.float64)
        areas = torch.tensor([float((r.crop[2] - r.crop[0]) * (r.crop[3] - r.crop[1])) for r in records])
        keep = box_nms(boxes, 1.0 / areas, params.crop_nms_thresh)
        records = [records[i] for i in sorted(keep.tolist())]
    if params.min_mask_region_area > 0:
        records = _clean(records, (h, w), params)
    return records
