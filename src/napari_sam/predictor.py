"""Prompted segmentation of one 2D image: encode once, decode per click.

Coordinates at this boundary are napari's: points (row, col), boxes (min_row, min_col, max_row,
max_col), in pixels of the original image. The model's (x, y) frame is used only inside.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike

from napari_sam._allocator import tune_allocator
from napari_sam.model import Sam
from napari_sam.preprocess import (
    ImageError,
    IntensityNorm,
    as_yxc,
    mask_to_logits,
    resized_shape,
    to_model_input,
    to_network_range,
)


class PromptError(ValueError):
    """Prompts that cannot be used as given (outside the image, malformed); the message says why."""


@dataclass
class Prediction:
    """Masks for one object.

    Attributes
    ----------
    masks : (K, Y, X) bool
        K = 3 with multimask output, else 1; sorted best first by ``scores``.
    scores : (K,) float32
        Predicted IoU of each mask.
    logits : (K, Hl, Wl) float32
        Low-res logits (Hl = Wl = 256 for the official models), usable as the next ``mask_input``.
    """

    masks: np.ndarray
    scores: np.ndarray
    logits: np.ndarray


@dataclass
class ImageEmbedding:
    """The encoder output for one 2D image, with what is needed to map prompts and masks back.

    Attributes
    ----------
    features : (1, C, He, We) float32 tensor
    original_size : (H, W) of the image
    input_size : (h, w) of the resized image inside the model's square input frame
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]



def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 matrix of 1D bilinear resampling as ``F.interpolate`` does it
    (``align_corners=False``, no antialiasing; source positions in float32 arithmetic as torch
    computes them, so the weights are the same)."""
    f32 = np.float32
    scale = f32(n_in) / f32(n_out)
    src = np.maximum(scale * (np.arange(n_out, dtype=f32) + f32(0.5)) - f32(0.5), f32(0.0))
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = np.clip(src - i0.astype(f32), f32(0.0), f32(1.0))
    m = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), (f32(1.0) - frac).astype(np.float64))
    np.add.at(m, (rows, i1), frac.astype(np.float64))
    return m


_BAND_ROWS = 128  # output rows per block of a banded resampling operator


@functools.lru_cache(maxsize=32)
def _upscale_operator(
    n_low: int, n_model: int, n_input: int, n_out: int, device: torch.device
) -> tuple[tuple[int, int, int, int, torch.Tensor], ...]:
    """One axis of SAM's mask upscaling as blocks of a banded matrix.

    SAM resizes low-res logits (n_low) to the model frame (n_model), crops the resized image's
    extent (n_input) and resizes that to the original size (n_out), all bilinear. The composition
    is one linear map (n_out, n_low) with a narrow band of non-zeros per row; it is returned as
    ``(out_start, out_stop, in_start, in_stop, block)`` pieces covering all output rows.
    """
    op = _bilinear_matrix(n_input, n_out) @ _bilinear_matrix(n_low, n_model)[:n_input]
    pieces = []
    for a in range(0, n_out, _BAND_ROWS):
        b = min(n_out, a + _BAND_ROWS)
        cols = np.flatnonzero(np.abs(op[a:b]).sum(axis=0))
        lo, hi = int(cols[0]), int(cols[-1]) + 1
        block = torch.as_tensor(op[a:b, lo:hi], dtype=torch.float32, device=device)
        pieces.append((a, b, lo, hi, block))
    return tuple(pieces)


def _apply_rows(pieces: tuple[tuple[int, int, int, int, torch.Tensor], ...], x: torch.Tensor) -> torch.Tensor:
    """(..., n_low, M) -> (..., n_out, M) with a banded operator from :func:`_upscale_operator`."""
    out = x.new_empty((*x.shape[:-2], pieces[-1][1], x.shape[-1]))
    for a, b, lo, hi, block in pieces:
        torch.matmul(block, x[..., lo:hi, :], out=out[..., a:b, :])
    return out


def upscale_logits(
    low_res: torch.Tensor, img_size: int, input_size: tuple[int, int], original_size: tuple[int, int]
) -> torch.Tensor:
    """Low-res logits (B, K, Hl, Wl) -> (B, K, H, W) float32 logits at the original image size.

    The same linear map as SAM's upscale (bilinear to ``img_size`` squared, crop to ``input_size``,
    bilinear to ``original_size``) without the ``img_size``-squared intermediate: each axis is one
    precomputed banded matrix, applied blockwise.
    """
    x = low_res.float()
    rows = _upscale_operator(x.shape[-2], img_size, input_size[0], original_size[0], x.device)
    cols = _upscale_operator(x.shape[-1], img_size, input_size[1], original_size[1], x.device)
    x = _apply_rows(rows, x)  # (B, K, H, Wl)
    return _apply_rows(cols, x.transpose(-1, -2)).transpose(-1, -2)


@contextlib.contextmanager
def autocast_for(model: Sam) -> Iterator[None]:
    """Autocast to the model's precision ("bf16" | "fp16"); a no-op for "fp32"."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(getattr(model, "precision", "fp32"))
    if dtype is None:
        yield
        return
    with torch.autocast(model.device.type, dtype=dtype):
        yield


@torch.inference_mode()
def encode_images(model: Sam, images_255: Sequence[np.ndarray]) -> list[ImageEmbedding]:
    """Encode (Y, X, 3) float 0..255 images in one batched encoder call (same-size images)."""
    if model.device.type == "cpu":
        tune_allocator()
    inputs, sizes = [], []
    for img in images_255:
        x = to_model_input(img, model.img_size).to(model.device)
        sizes.append(((img.shape[0], img.shape[1]), (x.shape[-2], x.shape[-1])))
        inputs.append(model.normalize_and_pad(x))
    with autocast_for(model):
        feats = model.encode(torch.cat(inputs)).float()
    return [
        ImageEmbedding(features=feats[i : i + 1], original_size=o, input_size=s)
        for i, (o, s) in enumerate(sizes)
    ]


class Predictor:
    """SAM on one 2D image.

    Parameters
    ----------
    model : Sam
        From :func:`napari_sam.load_model`.

    Examples
    --------
    >>> p = Predictor(load_model())                      # doctest: +SKIP
    >>> p.set_image(image)                               # (Y, X) or (Y, X, C)
    >>> pred = p.predict(points=[[120, 80]], point_labels=[1])
    >>> pred.masks[0]                                    # (Y, X) bool, the best mask
    """

    def __init__(self, model: Sam) -> None:
        self.model = model
        self._embedding: ImageEmbedding | None = None
        self.norm: IntensityNorm | None = None

    # -- image -------------------------------------------------------------------------------
    def set_image(self, image: ArrayLike, norm: IntensityNorm | None = None) -> None:
        """Encode ``image`` (Y, X) or (Y, X, C), C in {1, 3}, any real dtype.

        ``norm`` fixes the intensity normalisation (e.g. computed once for a whole stack);
        by default it is computed from this image.
        """
        img = as_yxc(np.asarray(image))
        self.norm = norm if norm is not None else IntensityNorm.from_data(img)
        self._embedding = encode_images(self.model, [to_network_range(img, self.norm)])[0]

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        """Use an embedding computed elsewhere (e.g. from :class:`napari_sam.EmbeddingCache`)."""
        expected = self.model.embedding_shape
        if tuple(embedding.features.shape[1:]) != expected:
            raise ImageError(
                f"embedding of shape {tuple(embedding.features.shape[1:])} does not fit this model "
                f"(expects {expected}); it was computed with another model"
            )
        self._embedding = ImageEmbedding(
            embedding.features.to(self.model.device, torch.float32),
            embedding.original_size,
            embedding.input_size,
        )

    @property
    def embedding(self) -> ImageEmbedding:
        if self._embedding is None:
            raise RuntimeError("no image set: call set_image(image) first")
        return self._embedding

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of the current image."""
        return self.embedding.original_size

    # -- prompts -----------------------------------------------------------------------------
    def _scale(self) -> tuple[float, float]:
        (oh, ow), (h, w) = self.embedding.original_size, self.embedding.input_size
        return h / oh, w / ow

    def points_to_model(self, points: ArrayLike) -> torch.Tensor:
        """(N, 2) (row, col) image pixels -> (N, 2) (x, y) model-frame coordinates, validated."""
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise PromptError(f"points must be (N, 2) as (row, col), got shape {pts.shape}")
        if not np.all(np.isfinite(pts)):
            raise PromptError("points contain NaN or infinite coordinates")
        h, w = self.image_shape
        outside = (pts[:, 0] < -0.5) | (pts[:, 0] > h - 0.5) | (pts[:, 1] < -0.5) | (pts[:, 1] > w - 0.5)
        if outside.any():
            bad = pts[outside][0]
            raise PromptError(
                f"point (row={bad[0]:.1f}, col={bad[1]:.1f}) is outside the image of shape ({h}, {w})"
            )
        sy, sx = self._scale()
        xy = np.stack([pts[:, 1] * sx, pts[:, 0] * sy], axis=1)
        return torch.as_tensor(xy, dtype=torch.float32, device=self.model.device)

    def boxes_to_model(self, boxes: ArrayLike) -> torch.Tensor:
        """(B, 4) (min_row, min_col, max_row, max_col) -> (B, 4) (x0, y0, x1, y1) model frame.

        Corners are sorted; a box partly outside the image is clipped to it; one entirely outside
        is an error.
        """
        b = np.asarray(boxes, dtype=np.float64)
        if b.size % 4:
            raise PromptError("a box is (min_row, min_col, max_row, max_col): 4 numbers")
        b = b.reshape(-1, 4)
        if not np.all(np.isfinite(b)):
            raise PromptError("boxes contain NaN or infinite coordinates")
        h, w = self.image_shape
        r0, r1 = np.minimum(b[:, 0], b[:, 2]), np.maximum(b[:, 0], b[:, 2])
        c0, c1 = np.minimum(b[:, 1], b[:, 3]), np.maximum(b[:, 1], b[:, 3])
        outside = (r1 < -0.5) | (r0 > h - 0.5) | (c1 < -0.5) | (c0 > w - 0.5)
        if outside.any():
            i = int(np.argmax(outside))
            raise PromptError(f"box {b[i].tolist()} lies entirely outside the image of shape ({h}, {w})")
        r0, r1 = np.clip(r0, 0, h - 1), np.clip(r1, 0, h - 1)
        c0, c1 = np.clip(c0, 0, w - 1), np.clip(c1, 0, w - 1)
        sy, sx = self._scale()
        xyxy = np.stack([c0 * sx, r0 * sy, c1 * sx, r1 * sy], axis=1)
        return torch.as_tensor(xyxy, dtype=torch.float32, device=self.model.device)

    def _mask_prompt(self, mask_input: ArrayLike) -> torch.Tensor:
        low_res = tuple(4 * s for s in self.model.prompt_encoder.image_embedding_size)
        m = np.asarray(mask_input)
        if m.dtype == np.bool_:
            if m.shape != self.image_shape:
                raise PromptError(
                    f"a boolean mask_input must have the image's shape {self.image_shape}, got {m.shape}"
                )
            return mask_to_logits(m, self.model.img_size, low_res).to(self.model.device)  # type: ignore[arg-type]
        if m.ndim == 3:
            m = m[0]  # best of a previous multimask prediction
        if m.shape != low_res:
            raise PromptError(
                f"mask_input logits must be {low_res} (a previous Prediction.logits), got {m.shape}; "
                "pass a boolean (Y, X) mask to prompt with a label"
            )
        return torch.as_tensor(m, dtype=torch.float32, device=self.model.device)[None, None]

    # -- decoding ----------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(
        self,
        points: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask: bool = True,
    ) -> Prediction:
        """Masks for one object from points, a box and/or a mask prompt.

        Parameters
        ----------
        points : (N, 2) (row, col), optional
        point_labels : (N,) 1 = positive, 0 = negative; default all positive
        box : (4,) (min_row, min_col, max_row, max_col), optional
        mask_input : (Hl, Wl) or (K, Hl, Wl) logits of a previous prediction, or a (Y, X) bool mask
        multimask : bool
            True: 3 masks (whole, part, subpart) sorted best first; False: 1 mask.
        """
        pts = None
        if points is not None and np.size(points):
            coords = self.points_to_model(points)
            if point_labels is None:
                labels = np.ones(len(coords))
            else:
                labels = np.asarray(point_labels).reshape(-1)
            if len(labels) != len(coords):
                raise PromptError(f"{len(coords)} points but {len(labels)} point_labels")
            if not np.isin(labels, (0, 1)).all():
                raise PromptError("point_labels must be 1 (positive) or 0 (negative)")
            pts = (coords[None], torch.as_tensor(labels, dtype=torch.int64, device=coords.device)[None])
        boxes = None
        if box is not None and np.size(box):
            boxes = self.boxes_to_model(box)
            if len(boxes) != 1:
                raise PromptError("predict takes one box; use predict_boxes for several objects")
        masks = self._mask_prompt(mask_input) if mask_input is not None else None
        if pts is None and boxes is None and masks is None:
            raise PromptError("give at least one prompt: points, a box or mask_input")
        logits, scores = self._decode(pts, boxes, masks, multimask)
        return self._finish(logits[0], scores[0])

    @torch.inference_mode()
    def predict_boxes(self, boxes: ArrayLike, multimask: bool = False) -> list[Prediction]:
        """One object per box (B, 4), decoded in one batched call."""
        model_boxes = self.boxes_to_model(boxes)
        if len(model_boxes) == 0:
            return []
        logits, scores = self._decode(None, model_boxes, None, multimask)
        return [self._finish(logits[i], scores[i]) for i in range(len(model_boxes))]

    def _decode(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
        multimask: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # The decoder runs in float32 whatever model.precision says: in bf16 it flips about 0.6%
        # of mask pixels (measured with random ViT-B weights, benchmarks/bench_model.py) for
        # about 10% less time; the bf16 encoder alone flips about 0.015%.
        logits, scores = self.model.decode(
            self.embedding.features, points=points, boxes=boxes, masks=masks,
            multimask_output=multimask,
        )
        return logits.float(), scores.float()

    def upscale(self, low_res: torch.Tensor) -> torch.Tensor:
        """(B, K, Hl, Wl) logits -> (B, K, H, W) float32 logits at the image size (see
        :func:`upscale_logits`; the same map as ``Sam.upscale_logits``, computed faster)."""
        return upscale_logits(
            low_res, self.model.img_size, self.embedding.input_size, self.embedding.original_size
        )

    def _finish(self, logits: torch.Tensor, scores: torch.Tensor) -> Prediction:
        order = torch.argsort(scores, descending=True)
        logits, scores = logits[order], scores[order]
        masks = self.upscale(logits[None])[0] > self.model.mask_threshold
        return Prediction(
            masks=masks.cpu().numpy(),
            scores=scores.cpu().numpy().astype(np.float32),
            logits=logits.cpu().numpy().astype(np.float32),
        )


__all__ = ["ImageEmbedding", "Prediction", "Predictor", "PromptError", "encode_images", "resized_shape"]
