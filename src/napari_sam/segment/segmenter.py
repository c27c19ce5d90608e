"""The stack-level segmentation engine: prompts on any slice, propagation, segment everything."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from napari_sam.model import Sam
from napari_sam.predictor import Prediction, Predictor, PromptError
from napari_sam.segment import _slices
from napari_sam.segment._util import Index, Progress, normalize_index
from napari_sam.segment.masks import bounding_box
from napari_sam.segment.masks import fill_holes as _fill_holes
from napari_sam.segment.masks import remove_small_islands
from napari_sam.segment.prompts import parse_box, parse_boxes, split_points
from napari_sam.segment.propagation import PropagationReport

if TYPE_CHECKING:  # pragma: no cover
    from napari_sam.embeddings import EmbeddingCache, StackEmbeddings
    from napari_sam.labels import LabelScheme
    from napari_sam.segment.everything import MaskRecord

__all__ = ["Segmenter"]


class Segmenter:
    """SAM on an image stack: click or box objects on any slice, follow them through z, or
    segment everything.

    Parameters
    ----------
    model : Sam
        From :func:`napari_sam.load_model`.
    stack : array-like or StackEmbeddings
        (Y, X), (Y, X, 3), (Z, Y, X), (T, Z, Y, X), ...; numpy, dask or zarr (read a plane at a
        time). Or a view from ``cache.view(stack, ...)`` made with non-default options (tiling,
        normalisation).
    cache : EmbeddingCache, optional
        Where slice embeddings are kept; default a memory-only cache with the default budget.
        Share one cache between Segmenters (or with a precompute job) to reuse embeddings.
    channel_axis : int, optional
        The colour axis, if not the last axis of length 3.

    Attributes
    ----------
    embeddings : StackEmbeddings
        The stack bound to the cache (``index_shape``, ``plane_shape``, ``precompute`` ...).
    last_logits : dict
        ``{index: (Hl, Wl) float32}``: low-res logits of the last :meth:`segment` on each slice,
        to pass back as ``logits=`` (or ``logits="last"``) when correcting that object.
    last_scores : dict
        ``{index: float}``: predicted IoU of the last mask on each slice.
    last_report : PropagationReport or None
        Slices filled and stop reasons of the last :meth:`propagate`.

    Examples
    --------
    >>> seg = Segmenter(load_model(), stack)                                  # doctest: +SKIP
    >>> mask = seg.segment(points=[[12, 80, 64]])                             # (z, row, col)
    >>> mask = seg.segment(points=[[12, 80, 64], [12, 90, 70]], point_labels=[1, 0],
    ...                    logits="last")                                     # correct it
    >>> volume = seg.propagate(mask, index=(12,))                             # (Z, Y, X) bool
    >>> labels = seg.segment_everything(index=(12,))                          # (Y, X) uint32
    """

    def __init__(
        self, model: Sam, stack: Any, cache: EmbeddingCache | None = None, channel_axis: int | None = None
    ) -> None:
        from napari_sam.embeddings import EmbeddingCache, StackEmbeddings

        if not isinstance(model, Sam):
            raise TypeError(f"model must be a napari_sam Sam model (from load_model), got {type(model).__name__}")
        if isinstance(stack, StackEmbeddings):  # a view made with custom options (tiling, norm)
            cache = stack.cache if cache is None else cache
            if stack.cache is not cache:
                raise ValueError("the stack view belongs to another cache than the one given")
        if cache is None:
            cache = EmbeddingCache(model)
        elif cache.model is not model:
            raise ValueError("the cache was made for another model; pass EmbeddingCache(model) of this model")
        self.model = model
        self.cache = cache
        self.embeddings: StackEmbeddings = (
            stack if isinstance(stack, StackEmbeddings) else cache.view(stack, channel_axis=channel_axis)
        )
        self.last_logits: dict[Index, np.ndarray] = {}
        self.last_scores: dict[Index, float] = {}
        self.last_report: PropagationReport | None = None
        self._logit_offsets: dict[Index, tuple[int, int]] = {}

    def close(self) -> None:
        """Stop the background encoding of neighbouring slices (also on leaving a ``with`` block)."""
        self.embeddings.close()

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def index_shape(self) -> tuple[int, ...]:
        """Shape of the leading (slice) axes: () for a 2D image, (Z,) for a stack."""
        return tuple(self.embeddings.index_shape)

    @property
    def plane_shape(self) -> tuple[int, int]:
        """(Y, X) of every slice."""
        return tuple(self.embeddings.plane_shape)  # type: ignore[return-value]

    def _index(self, index: Any) -> Index:
        return normalize_index(index if index is not None or self.index_shape else (), self.index_shape)

    # -- prompts on one slice --------------------------------------------------------------------
    def segment(
        self,
        points: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        boxes: Any = None,
        mask_input: ArrayLike | None = None,
        index: Any = None,
        multimask: bool | None = None,
        logits: ArrayLike | str | None = None,
        fill_holes: bool = False,
        min_island: int = 0,
    ) -> np.ndarray:
        """One object on one slice from points, a box and/or a mask.

        Parameters
        ----------
        points : (N, 2) (row, col) with ``index``, or (N, n_index + 2) in stack coordinates,
            e.g. (z, row, col) rows of a napari Points layer (then ``index`` may be omitted;
            all points must lie on one slice, see :func:`group_by_slice`)
        point_labels : (N,) 1 = positive, 0 = negative; default all positive
        box : (4,) (min_row, min_col, max_row, max_col), or the (2 or 4, D) corners of a napari
            Shapes rectangle
        boxes : several boxes ((B, 4) or a list); each is one object and the union of the B
            masks is returned (use :meth:`segment_many` to keep them apart)
        mask_input : (Y, X) bool, optional
            An existing mask (e.g. ``labels[z] == id``) to refine.
        index : tuple of int, optional
            The slice, e.g. (z,) or (t, z); () or None for a 2D image.
        multimask : bool, optional
            None (default): as the paper, a single point (nothing else) takes the best of SAM's 3
            masks by predicted IoU; any other prompt takes the single-mask output.
        logits : (Hl, Wl) low-res logits or "last", optional
            The previous prediction on this slice (``last_logits[index]``), for iterative
            correction: pass all clicks so far plus the previous logits.
        fill_holes : bool
            Fill enclosed holes of the mask.
        min_island : int
            Remove parts smaller than this many pixels (the largest part is always kept).

        Returns
        -------
        (Y, X) bool
        """
        n_index = len(self.index_shape)
        idx: Index | None = self._index(index) if index is not None else None
        pts = labels = None
        if points is not None and np.size(points):
            idx, pts, labels = split_points(points, point_labels, n_index, idx)
        elif point_labels is not None and np.size(point_labels):
            raise PromptError("point_labels given without points")
        box2d = None
        if box is not None and np.size(box):
            idx, box2d = parse_box(box, n_index, idx)
        if boxes is not None and len(boxes):
            idx, many = parse_boxes(boxes, n_index, idx)
            if len(many) > 1:
                if pts is not None or box2d is not None or mask_input is not None or logits is not None:
                    raise PromptError("several boxes are several objects: give them without points, box or masks")
                return np.any(self.segment_many(many, idx, fill_holes, min_island), axis=0)
            if box2d is not None:
                raise PromptError("give one box as box= or boxes=, not both")
            box2d = many[0] if len(many) else None
        idx = self._index(idx)
        if mask_input is not None and logits is not None:
            raise PromptError("give mask_input (a label to refine) or logits (the previous prediction), not both")
        if isinstance(logits, str):
            if logits != "last":
                raise PromptError(f"logits must be an array or 'last', got {logits!r}")
            logits = self.last_logits.get(idx)
            if logits is None:
                raise PromptError(f"no previous prediction on slice {idx} to correct")
        route = box2d
        label = None if mask_input is None else np.asarray(mask_input)
        if pts is None and box2d is None and label is not None and label.shape == self.plane_shape:
            route = bounding_box(label)  # a tiled plane picks the tile by the label
        predictor, off = self.embeddings.predictor(idx, points=pts, box=route)
        prompt_mask = self._mask_prompt(mask_input, logits, idx, off, predictor)
        if multimask is None:
            multimask = pts is not None and len(pts) == 1 and box2d is None and prompt_mask is None
        if pts is None and box2d is None and prompt_mask is None:
            raise PromptError("give at least one prompt: points, a box or mask_input")
        shift = np.asarray(off, dtype=np.float64)
        pred = predictor.predict(
            points=None if pts is None else pts - shift,
            point_labels=labels,
            box=None if box2d is None else box2d - np.tile(shift, 2),
            mask_input=prompt_mask,
            multimask=multimask,
        )
        self.last_logits[idx] = pred.logits[0]
        self.last_scores[idx] = float(pred.scores[0])
        self._logit_offsets[idx] = tuple(off)  # type: ignore[assignment]
        return self._finish(pred.masks[0], off, fill_holes, min_island)

    def segment_many(
        self, boxes: Any, index: Any = None, fill_holes: bool = False, min_island: int = 0
    ) -> list[np.ndarray]:
        """Several objects on one slice, one per box, decoded in one batched call (per tile).

        Parameters
        ----------
        boxes : (B, 4) (min_row, min_col, max_row, max_col), or a list of boxes / Shapes corners
        index : the slice; may be omitted when the boxes are in stack coordinates

        Returns
        -------
        list of B (Y, X) bool masks, in the order of ``boxes``.
        """
        n_index = len(self.index_shape)
        idx, many = parse_boxes(boxes, n_index, self._index(index) if index is not None else None)
        idx = self._index(idx)
        groups: dict[tuple[int, int], tuple[Predictor, list[int]]] = {}
        for i, b in enumerate(many):
            predictor, off = self.embeddings.predictor(idx, box=b)
            groups.setdefault(tuple(off), (predictor, []))[1].append(i)  # type: ignore[arg-type]
        out: list[np.ndarray] = [np.zeros(self.plane_shape, dtype=bool)] * len(many)
        for off, (predictor, members) in groups.items():
            preds: list[Prediction] = predictor.predict_boxes(many[members] - np.tile(off, 2), multimask=False)
            for i, pred in zip(members, preds):
                out[i] = self._finish(pred.masks[0], off, fill_holes, min_island)
        return out

    def _mask_prompt(
        self, mask_input: Any, logits: Any, idx: Index, off: tuple[int, int], predictor: Predictor
    ) -> np.ndarray | None:
        if logits is not None:
            if logits is self.last_logits.get(idx) and self._logit_offsets.get(idx) != tuple(off):
                return None  # the last prediction was made on another tile of this large plane
            return np.asarray(logits, dtype=np.float32)
        if mask_input is None:
            return None
        m = np.asarray(mask_input)
        if m.dtype != bool:
            raise PromptError(
                f"mask_input must be a boolean (Y, X) mask, got dtype {m.dtype}; e.g. labels[z] == id"
            )
        if m.shape != self.plane_shape:
            raise PromptError(f"mask_input must have the slice's shape {self.plane_shape}, got {m.shape}")
        h, w = predictor.image_shape
        return m[off[0] : off[0] + h, off[1] : off[1] + w]

    def _finish(self, mask: np.ndarray, off: Any, fill: bool, min_island: int) -> np.ndarray:
        full = _slices.place(mask, off, self.plane_shape)
        if min_island > 1:
            full = remove_small_islands(full, min_island)
        if fill:
            full = _fill_holes(full)
        return full

    # -- through the stack -----------------------------------------------------------------------
    def propagate(
        self,
        mask: ArrayLike | None,
        index: Any = None,
        stop_iou: float = 0.5,
        max_area_change: float = 2.5,
        z_range: tuple[int, int] | None = None,
        annotations: dict[Any, ArrayLike] | None = None,
        progress: Progress | None = None,
        cancel: Any = None,
        axis: int | None = None,
        prompts: tuple[str, ...] = _slices.DEFAULT_PROMPTS,
    ) -> np.ndarray:
        """Follow one object through the stack from one or several annotated slices.

        Parameters
        ----------
        mask : (Y, X) bool on slice ``index``, or None when ``annotations`` holds every slice
        index : tuple of int
            The annotated slice, e.g. (z,); on a (T, Z, Y, X) stack (t, z), which also fixes the
            axis not propagated along.
        stop_iou : float
            Stop when SAM's predicted IoU for the next slice is below this.
        max_area_change : float
            Stop when the area changes by more than this factor between neighbouring slices.
        z_range : (start, stop), optional
            Half-open range of positions along the axis; default the whole axis.
        annotations : {position or index: (Y, X) bool}, optional
            More annotated slices of the same object; slices between two annotations are
            constrained by both (their predictions are blended by distance, see
            :mod:`napari_sam.segment.propagation`); stop criteria apply only beyond them.
        progress : callable (done, total), optional
        cancel : cancel token, optional
            Raises :class:`SegmentationCancelled` (its ``partial`` holds the volume so far).
        axis : int, optional
            Which leading axis to follow: default the last one (z); e.g. 0 on (T, Z, Y, X) to
            follow through time at fixed z.
        prompts : tuple of "box", "points", "mask"
            What is derived from the previous slice's mask to prompt the next slice.

        Returns
        -------
        (N, Y, X) bool with N the length of the axis (slices outside the object are empty).
        Stop reasons are in :attr:`last_report`.
        """
        volume, rep = _slices.propagate(
            self, mask, index, stop_iou, max_area_change, z_range, annotations, progress, cancel, axis, prompts
        )
        self.last_report = rep
        return volume

    # -- segment everything ----------------------------------------------------------------------
    def generate_masks(self, index: Any = None, cancel: Any = None, **params: Any) -> list[MaskRecord]:
        """The automatic masks of one slice, before they become labels (see
        :class:`napari_sam.segment.EverythingParams` for ``params``)."""
        from napari_sam.segment.everything import everything_params

        return _slices.masks_of_plane(self, self._index(index), everything_params(self.model, **params), cancel, None)

    def segment_everything(
        self,
        index: Any = None,
        points_per_side: int = 32,
        pred_iou_thresh: float | None = None,
        stability_score_thresh: float | None = None,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        min_mask_region_area: int = 16,
        batch_size: int = 64,
        progress: Progress | None = None,
        cancel: Any = None,
        *,
        max_area_fraction: float = 0.4,
        link_iou: float = 0.25,
        scheme: LabelScheme | None = None,
        class_id: int | None = None,
        out: np.ndarray | None = None,
        mode: str = "keep",
        **params: Any,
    ) -> np.ndarray:
        """Every object on a slice, or on every slice with IDs linked through z.

        Parameters
        ----------
        index : tuple of int, optional
            One slice -> (Y, X) labels. A shorter prefix (e.g. (t,) on (T, Z, Y, X)) or None ->
            every slice under it, objects linked across the last leading axis by overlap
            (optimal matching): labels of shape (Z, Y, X) (or the full stack shape). A 2D image
            with None -> (Y, X).
        points_per_side, pred_iou_thresh, stability_score_thresh, box_nms_thresh,
        crop_n_layers, batch_size : see :class:`napari_sam.segment.EverythingParams`. The
            thresholds (and any field in ``params``) left as None take the model's
            recommended values (``model.everything_defaults``, e.g. for ``tiny-synth``), else
            the paper's (0.88, 0.95).
        min_mask_region_area : int
            Remove islands and fill holes under this many pixels; objects left with fewer
            visible pixels are dropped (microscopy default 16: debris of a few pixels).
        progress, cancel : progress callback (done, total) over grid points; cancel token
        max_area_fraction : float
            Drop masks covering more than this fraction of the slice (the background, the whole
            field); 1.0 keeps all.
        link_iou : float
            Least IoU for an object on slice z to take the ID of one on slice z - 1.
        scheme, class_id : LabelScheme and class, optional
            Panoptic output (class_id * divisor + instance); default plain instance IDs.
        out : integer array of the result's shape, optional
            Write into this array (in place, through :func:`napari_sam.labels.write_mask` with
            ``mode``; in "keep" mode existing labels are never changed) and return it. New IDs
            start above those already used.
        mode : "keep" | "replace" | "same_class"
        **params : further :class:`napari_sam.segment.EverythingParams` fields
            (stability_score_offset, crop_nms_thresh, crop_overlap_ratio,
            crop_n_points_downscale_factor).

        Returns
        -------
        Integer labels (uint32 unless ``out`` is given), 0 = background. Overlaps: the smaller
        object wins (see :mod:`napari_sam.segment.instances`).
        """
        from napari_sam.segment.everything import everything_params

        ev = everything_params(
            self.model,
            points_per_side=points_per_side, batch_size=batch_size, pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh, box_nms_thresh=box_nms_thresh,
            crop_n_layers=crop_n_layers, min_mask_region_area=min_mask_region_area, **params,
        )
        return _slices.everything(
            self, index, ev, progress, cancel, max_area_fraction, link_iou, scheme, class_id, out, mode
        )
