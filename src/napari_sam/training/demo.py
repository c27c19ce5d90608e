"""The offline demo behind ``napari-sam demo``: a generated sample, segmented from clicks.

A synthetic nuclei image is generated, one simulated user click is placed on each nucleus
(its interior point, from the generator's ground truth, as the evaluation protocol clicks),
the default model (``tiny-synth``, shipped) segments every click, and the masks are written
into a label image without overwriting each other. Nothing is downloaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DemoResult", "overlay_rgb", "run_demo"]


@dataclass
class DemoResult:
    """Files written by :func:`run_demo` and what was found.

    Attributes
    ----------
    image, labels, ground_truth : paths of TIFF files ((Y, X) uint16 image, uint32 labels)
    overlay : path of an RGB PNG (the image, label colours at 40 %, clicks as white dots)
    points : path of a CSV file with the clicks (row, col)
    n_objects : number of objects segmented
    mean_iou : mean IoU of the masks with the generator's ground truth
    """

    image: Path
    labels: Path
    ground_truth: Path
    overlay: Path
    points: Path
    n_objects: int
    mean_iou: float


def _colours(n: int) -> np.ndarray:
    """(n + 1, 3) uint8 bright random colours (fixed seed); row 0 (background) is black."""
    table = np.random.default_rng(0).integers(64, 256, size=(n, 3))
    return np.vstack([np.zeros((1, 3), dtype=np.int64), table]).astype(np.uint8)


def overlay_rgb(image: np.ndarray, labels: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend instance labels over a grayscale image.

    Parameters
    ----------
    image : (Y, X) any real dtype, shown with a robust 0.5-99.5 % contrast
    labels : (Y, X) integer, 0 = background
    alpha : opacity of the label colours

    Returns
    -------
    (Y, X, 3) uint8
    """
    from napari_sam.preprocess import IntensityNorm, to_network_range

    grey = to_network_range(image[..., None], IntensityNorm.from_data(image))
    ids, inverse = np.unique(labels, return_inverse=True)
    colours = _colours(len(ids))
    if ids[0] != 0:  # no background in the labels: every id gets a colour
        colours = colours[1:]
    rgb = colours[inverse.reshape(labels.shape)].astype(np.float32)
    out = np.where((labels > 0)[..., None], (1 - alpha) * grey + alpha * rgb, grey)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def run_demo(
    out_dir: str | os.PathLike[str],
    model: Any = None,
    seed: int = 0,
    shape: tuple[int, int] = (256, 256),
) -> DemoResult:
    """Generate a nuclei image, segment every nucleus from one click, write the results.

    Parameters
    ----------
    out_dir : folder (created if needed) for ``image.tif``, ``labels.tif``,
        ``ground_truth.tif``, ``overlay.png`` and ``points.csv``.
    model : Sam, registry name or checkpoint path; None: the shipped ``tiny-synth``.
    seed : generator seed of the sample.
    shape : (Y, X) of the generated image.

    Returns
    -------
    DemoResult
    """
    import tifffile
    from PIL import Image

    from napari_sam.labels import LabelScheme, write_mask
    from napari_sam.model import Sam
    from napari_sam.predictor import Predictor
    from napari_sam.training.evaluate import iou
    from napari_sam.training.prompts import interior_point
    from napari_sam.training.synthetic import TRAIN_PRESET, make_image_2d
    from napari_sam.weights import load_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = model if isinstance(model, Sam) else load_model(model)
    image, truth = make_image_2d(replace(TRAIN_PRESET, shape=tuple(shape)), seed)
    predictor = Predictor(net)
    predictor.set_image(image)
    labels = np.zeros(image.shape, dtype=np.uint32)
    scheme = LabelScheme()
    points, scores = [], []
    for obj in np.unique(truth[truth > 0]):
        target = truth == obj
        point = interior_point(target)
        mask = predictor.predict(points=[point], point_labels=[1]).masks[0]
        points.append(point)
        scores.append(iou(mask, target))
        if mask.any():
            write_mask(labels, mask, scheme, mode="keep")
    paths = {name: out / name for name in ("image.tif", "labels.tif", "ground_truth.tif", "overlay.png", "points.csv")}
    tifffile.imwrite(paths["image.tif"], image)
    tifffile.imwrite(paths["labels.tif"], labels)
    tifffile.imwrite(paths["ground_truth.tif"], truth)
    rgb = overlay_rgb(image, labels)
    for r, c in points:
        rgb[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2] = 255
    Image.fromarray(rgb).save(paths["overlay.png"])
    lines = ["row,col"] + [f"{r},{c}" for r, c in points]
    paths["points.csv"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return DemoResult(
        image=paths["image.tif"], labels=paths["labels.tif"], ground_truth=paths["ground_truth.tif"],
        overlay=paths["overlay.png"], points=paths["points.csv"], n_objects=len(points),
        mean_iou=float(np.mean(scores)) if scores else float("nan"),
    )
