"""Building blocks of automatic mask generation (SAM paper, section 7.1 / appendix).

Coordinates follow napari: points (row, col); boxes (min_row, min_col, max_row, max_col). Mask
boxes hold inclusive pixel indices; box IoU treats the four numbers as continuous corners
(area = (max_row - min_row) * (max_col - min_col)), as torchvision's NMS does, so a duplicate is
suppressed exactly when the reference implementation suppresses it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "box_iou",
    "box_nms",
    "crop_boxes",
    "masks_to_boxes",
    "near_crop_edge",
    "point_grid",
    "stability_score",
]


def point_grid(n_per_side: int) -> np.ndarray:
    """(n², 2) (row, col) in [0, 1]: the centres of an n x n grid of equal cells, row-major."""
    if n_per_side < 1:
        raise ValueError(f"points_per_side must be >= 1, got {n_per_side}")
    centres = (np.arange(n_per_side) + 0.5) / n_per_side
    rows, cols = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=1)


def crop_boxes(
    shape: tuple[int, int], n_layers: int, overlap_ratio: float = 512 / 1500
) -> list[tuple[int, tuple[int, int, int, int]]]:
    """Crops of an image for multi-scale mask generation.

    Layer 0 is the whole image; layer i (1..n_layers) cuts it into (2**i)² overlapping crops
    whose overlap is ``overlap_ratio`` of the shorter side, scaled down with the crop size.

    Returns
    -------
    list of (layer, (row0, col0, row1, col1)) with exclusive ends.
    """
    if n_layers < 0:
        raise ValueError(f"crop_n_layers must be >= 0, got {n_layers}")
    h, w = int(shape[0]), int(shape[1])
    out: list[tuple[int, tuple[int, int, int, int]]] = [(0, (0, 0, h, w))]
    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * min(h, w) * 2 / n)
        side_h = math.ceil((h + overlap * (n - 1)) / n)
        side_w = math.ceil((w + overlap * (n - 1)) / n)
        starts_r = [int((side_h - overlap) * i) for i in range(n)]
        starts_c = [int((side_w - overlap) * i) for i in range(n)]
        for r0 in starts_r:
            for c0 in starts_c:
                out.append((layer, (r0, c0, min(r0 + side_h, h), min(c0 + side_w, w))))
    return out


def stability_score(logits: torch.Tensor, threshold: float = 0.0, offset: float = 1.0) -> torch.Tensor:
    """IoU between the masks at ``threshold + offset`` and at ``threshold - offset``.

    Parameters
    ----------
    logits : (N, H, W) mask logits
    threshold : the binarisation threshold (the model's ``mask_threshold``)
    offset : how far the cut-off is moved each way

    Returns
    -------
    (N,) float32 in [0, 1]; a mask empty at both cut-offs scores 0.
    """
    flat = logits.flatten(1)
    inner = (flat > threshold + offset).sum(dim=1, dtype=torch.int64)
    outer = (flat > threshold - offset).sum(dim=1, dtype=torch.int64)
    score = inner.double() / outer.clamp(min=1).double()
    return score.float()


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) int64 (min_row, min_col, max_row, max_col), inclusive.

    An empty mask gets the box (0, 0, 0, 0).
    """
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.int64, device=masks.device)
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)

    def _ends(hits: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        ramp = torch.arange(size, device=hits.device)
        first = torch.where(hits, ramp, size).amin(dim=1)
        last = torch.where(hits, ramp, -1).amax(dim=1)
        return first, last

    r0, r1 = _ends(rows, h)
    c0, c1 = _ends(cols, w)
    boxes = torch.stack([r0, c0, r1, c1], dim=1)
    empty = ~rows.any(dim=1)
    boxes[empty] = 0
    return boxes


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, 4) x (M, 4) boxes -> (N, M) IoU, corners as continuous coordinates."""
    a, b = a.double(), b.double()
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lo = torch.maximum(a[:, None, :2], b[None, :, :2])
    hi = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(dim=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression.

    Boxes are visited from the highest score down (ties keep input order); a box is dropped if
    its IoU with an already kept box is greater than ``iou_threshold``.

    Parameters
    ----------
    boxes : (N, 4)
    scores : (N,)
    iou_threshold : float

    Returns
    -------
    (K,) int64 indices of the kept boxes, highest score first.
    """
    n = len(boxes)
    if n == 0:
        return torch.zeros(0, dtype=torch.int64)
    order = torch.from_numpy(np.argsort(-scores.detach().cpu().double().numpy(), kind="stable"))
    ordered = boxes.detach().cpu()[order]
    alive = np.ones(n, dtype=bool)
    block = 1024  # IoU rows are computed a block at a time: memory O(block * N), not O(N²)
    for start in range(0, n, block):
        stop = min(start + block, n)
        if not alive[start:stop].any():
            continue
        # overlaps[i, j]: box start+j (score order) overlaps box start+i too much.
        overlaps = (box_iou(ordered[start:stop], ordered[start:]) > iou_threshold).numpy()
        for i in range(stop - start):
            if alive[start + i]:
                alive[start + i + 1 :] &= ~overlaps[i, i + 1 :]
    return order[torch.from_numpy(alive)]


def near_crop_edge(
    boxes: torch.Tensor, crop: tuple[int, int, int, int], shape: tuple[int, int], atol: float = 20.0
) -> torch.Tensor:
    """(N,) bool: boxes within ``atol`` px of an edge of ``crop`` that is not an image edge.

    Masks cut by a crop's inner edge are partial objects; the whole-image pass (or another
    crop) sees them whole. ``crop`` is (row0, col0, row1, col1) and ``boxes`` are in image
    coordinates.
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.bool)
    crop_t = torch.tensor(crop, dtype=torch.float64)
    image_t = torch.tensor([0, 0, shape[0], shape[1]], dtype=torch.float64)
    b = boxes.double()
    near_crop = (b - crop_t).abs() <= atol
    near_image = (b - image_t).abs() <= atol
    return (near_crop & ~near_image).any(dim=1)
