"""Overlapping tiles for planes too large to encode at once, and routing prompts to a tile.

Each axis of length L > ``tile_size`` is cut into n = ceil(L / core) cores of nearly equal
length (core = tile_size - 2 * halo); each tile is the core grown by the halo on both sides and
shifted inwards at the image border so every tile is exactly ``tile_size`` long. An object
whose centre lies in a tile's core and that reaches at most ``halo`` pixels beyond the core
is seen whole by that tile.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from napari_sam.embeddings.stack import Region
from napari_sam.predictor import PromptError


def _axis_tiles(length: int, tile: int, halo: int) -> list[tuple[int, int, int, int]]:
    """(start, stop, core_start, core_stop) along one axis."""
    if length <= tile:
        return [(0, length, 0, length)]
    core = tile - 2 * halo
    n = math.ceil(length / core)
    bounds = [round(i * length / n) for i in range(n + 1)]
    out = []
    for c0, c1 in itertools.pairwise(bounds):
        start = min(max(c0 - halo, 0), length - tile)
        out.append((start, start + tile, c0, c1))
    return out


@dataclass(frozen=True)
class TileLayout:
    """Tiles of one plane shape.

    Attributes
    ----------
    tiles : list of (row0, col0, row1, col1)
        Extent of each tile (end exclusive), row-major order.
    cores : list of (row0, col0, row1, col1)
        The part of each tile it is responsible for; cores partition the plane.
    """

    plane_shape: tuple[int, int]
    tile_size: int
    halo: int
    tiles: tuple[Region, ...]
    cores: tuple[Region, ...]

    @classmethod
    def build(cls, plane_shape: tuple[int, int], tile_size: int, halo: int, threshold: int) -> TileLayout:
        """One tile (the whole plane) unless the plane's longest side exceeds ``threshold``."""
        h, w = plane_shape
        if max(h, w) <= threshold:
            whole = (0, 0, h, w)
            return cls(plane_shape, tile_size, halo, (whole,), (whole,))
        rows = _axis_tiles(h, tile_size, halo)
        cols = _axis_tiles(w, tile_size, halo)
        tiles = tuple((r[0], c[0], r[1], c[1]) for r in rows for c in cols)
        cores = tuple((r[2], c[2], r[3], c[3]) for r in rows for c in cols)
        return cls(plane_shape, tile_size, halo, tiles, cores)

    @property
    def is_tiled(self) -> bool:
        return len(self.tiles) > 1 or self.tiles[0] != (0, 0, *self.plane_shape)

    def route(self, points: np.ndarray | None = None, box: np.ndarray | None = None) -> int:
        """The tile for a prompt: (N, 2) (row, col) points and/or a (4,) box in plane pixels.

        The tile must contain every point. A box goes to a tile that contains it whole, else
        to the one that covers most of it. Ties go to the tile whose core holds the prompt's
        centre, then to the tile whose centre is nearest.
        """
        if len(self.tiles) == 1:
            return 0
        pts = np.zeros((0, 2)) if points is None else np.asarray(points, dtype=np.float64).reshape(-1, 2)
        bx = None if box is None else np.asarray(box, dtype=np.float64).reshape(4)
        if bx is not None:
            r0, r1 = sorted((bx[0], bx[2]))
            c0, c1 = sorted((bx[1], bx[3]))
            if r1 - r0 > self.tile_size or c1 - c0 > self.tile_size:
                raise PromptError(
                    f"the box {bx.tolist()} is larger than one tile ({self.tile_size} px) of this large "
                    "plane; draw a smaller box or increase tile_size"
                )
            bx = np.array([r0, c0, r1, c1])
        if len(pts) == 0 and bx is None:
            raise PromptError("this plane is tiled: give a point or a box so the right tile can be chosen")
        centre = pts.mean(axis=0) if bx is None else np.array([(bx[0] + bx[2]) / 2, (bx[1] + bx[3]) / 2])
        best, best_key = -1, None
        for i, (tile, core) in enumerate(zip(self.tiles, self.cores, strict=True)):
            inside = _contains(tile, pts)
            cover = 1.0 if bx is None else _box_cover(tile, bx)
            in_core = bool(_contains(core, centre[None]))
            tile_centre = np.array([(tile[0] + tile[2]) / 2, (tile[1] + tile[3]) / 2])
            key = (inside, cover, in_core, -float(np.abs(centre - tile_centre).max()))
            if best_key is None or key > best_key:
                best, best_key = i, key
        if best_key is not None and not best_key[0]:
            raise PromptError(
                f"the points span more than one tile ({self.tile_size} px) of this large plane; "
                "prompt one object at a time, with points close together"
            )
        return best


def _contains(region: Region, pts: np.ndarray) -> bool:
    """True if every (row, col) lies inside ``region`` (pixel centres, end exclusive)."""
    if len(pts) == 0:
        return True
    r, c = pts[:, 0], pts[:, 1]
    return bool(np.all((r >= region[0] - 0.5) & (r < region[2] - 0.5) & (c >= region[1] - 0.5) & (c < region[3] - 0.5)))


def _box_cover(region: Region, box: np.ndarray) -> float:
    """Fraction of the box's area inside ``region`` (1.0 for a box fully inside)."""
    rows = max(0.0, min(box[2], region[2] - 1) - max(box[0], region[0]))
    cols = max(0.0, min(box[3], region[3] - 1) - max(box[1], region[1]))
    area = max(box[2] - box[0], 1e-9) * max(box[3] - box[1], 1e-9)
    if box[2] - box[0] == 0 or box[3] - box[1] == 0:  # degenerate box: treat as its centre point
        inside = _contains(region, np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]]))
        return 1.0 if inside else 0.0
    return float(rows * cols / area)
