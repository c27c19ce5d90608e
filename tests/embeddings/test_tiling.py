"""Large planes: overlapping tiles, prompts routed to the right tile, masks back in plane coordinates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam.embeddings import EmbeddingCache, TileLayout
from napari_sam.predictor import Predictor, PromptError


@pytest.fixture(scope="module")
def big_plane() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 4000, (3000, 3000)).astype(np.uint16)


def _inside(box, region) -> bool:
    return region[0] <= box[0] and region[1] <= box[1] and box[2] <= region[2] - 1 and box[3] <= region[3] - 1


def test_tiles_cover_a_3000_px_plane_with_halos(model, big_plane) -> None:
    view = EmbeddingCache(model).view(big_plane)
    tiles, cores = view.tiles(()), view.cores(())
    assert view.is_tiled and len(tiles) == len(cores) > 1
    halo = view.layout.halo
    coverage = np.zeros(big_plane.shape, dtype=np.uint8)
    for (r0, c0, r1, c1), core in zip(tiles, cores, strict=True):
        assert (r1 - r0, c1 - c0) == (model.img_size, model.img_size)  # no downscaling inside a tile
        assert 0 <= r0 and 0 <= c0 and r1 <= 3000 and c1 <= 3000
        coverage[core[0] : core[2], core[1] : core[3]] += 1
        for lo, hi, clo, chi in ((r0, r1, core[0], core[2]), (c0, c1, core[1], core[3])):
            assert clo - lo >= min(halo, clo) and hi - chi >= min(halo, 3000 - chi)  # halo unless at the border
    assert coverage.min() == coverage.max() == 1  # cores partition the plane


def test_tiling_threshold() -> None:
    assert not TileLayout.build((2048, 2048), 1024, 128, 2048).is_tiled
    assert TileLayout.build((2049, 100), 1024, 128, 2048).is_tiled


def test_point_is_routed_to_the_tile_whose_core_holds_it(model, encoder, big_plane) -> None:
    view = EmbeddingCache(model).view(big_plane)
    point = np.array([[1500.0, 10.0]])
    predictor, (dr, dc) = view.predictor((), points=point)
    tile = view.tiles(())[view.tiles(()).index((dr, dc, dr + 256, dc + 256))]
    core = view.cores(())[view.tiles(()).index(tile)]
    assert core[0] <= 1500 < core[2] and core[1] <= 10 < core[3]
    assert predictor.image_shape == (256, 256) and encoder.images == 1  # only that tile was encoded
    pred = predictor.predict(points=point - [dr, dc], point_labels=[1])
    assert pred.masks.shape == (3, 256, 256)
    full = view.place_in_plane(pred.masks[0], (dr, dc))
    assert full.shape == (3000, 3000) and full.sum() == pred.masks[0].sum()
    assert np.array_equal(full[dr : dr + 256, dc : dc + 256], pred.masks[0])
    # the tile's embedding is exactly that of the cropped tile with the stack's normalisation
    reference = Predictor(model)
    reference.set_image(big_plane[dr : dr + 256, dc : dc + 256], norm=view.norm)
    assert torch.allclose(predictor.embedding.features, reference.embedding.features, atol=1e-5)


def test_box_across_a_core_border_goes_to_a_tile_that_holds_it_whole(model, big_plane) -> None:
    view = EmbeddingCache(model).view(big_plane)
    border = view.cores(())[0][2]  # first core boundary along rows
    box = np.array([border - 30, 700, border + 30, 760])
    predictor, (dr, dc) = view.predictor((), box=box)
    assert _inside(box, (dr, dc, dr + 256, dc + 256))
    shifted = box - [dr, dc, dr, dc]
    assert predictor.predict(box=shifted, multimask=False).masks.shape == (1, 256, 256)
    # a box poking out of every tile still gets the one covering most of it
    corner = np.array([0, 0, 250, 250])
    _, offset = view.predictor((), box=corner)
    assert offset == (0, 0)


def test_prompts_that_fit_no_tile_are_clear_errors(model, big_plane) -> None:
    view = EmbeddingCache(model).view(big_plane)
    with pytest.raises(PromptError, match="larger than one tile"):
        view.predictor((), box=[100, 100, 600, 200])
    with pytest.raises(PromptError, match="more than one tile"):
        view.predictor((), points=[[10, 10], [2900, 2900]])
    with pytest.raises(PromptError, match="give a point or a box"):
        view.predictor(())
    with pytest.raises(ValueError, match="tiles"):
        view.get(())


def test_tiles_are_cached_one_by_one(model, encoder) -> None:
    plane = np.random.default_rng(6).integers(0, 4000, (600, 600)).astype(np.uint16)
    view = EmbeddingCache(model).view(plane, tile_threshold=512)
    n = len(view.tiles(()))
    assert n == 16
    assert view.precompute() == n and view.is_cached(())
    plane[10, 300] = (int(plane[10, 300]) + 2000) % 4000  # inside the top row of tiles only
    touched = sum(t[0] <= 10 < t[2] and t[1] <= 300 < t[3] for t in view.tiles(()))
    assert not view.is_cached(())
    assert view.precompute() == touched and encoder.images == n + touched
    plane[590, 590] = (int(plane[590, 590]) + 2000) % 4000
    view.ensure(())  # what a GUI "encode this slice" calls: every tile, tiled or not
    assert view.is_cached(()) and encoder.images == n + touched + 1


def test_untiled_plane_has_zero_offset(model) -> None:
    view = EmbeddingCache(model).view(np.zeros((3, 300, 200), dtype=np.uint8))
    assert view.tiles((0,)) == [(0, 0, 300, 200)]
    predictor, offset = view.predictor((1,), points=[[5, 5]])
    assert offset == (0, 0) and predictor.image_shape == (300, 200)


def test_bad_tile_settings(model) -> None:
    with pytest.raises(ValueError, match="halo"):
        EmbeddingCache(model).view(np.zeros((30, 30)), tile_size=256, halo=128)
