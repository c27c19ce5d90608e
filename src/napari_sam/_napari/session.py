"""The adapter between the widget and the engine: one model on one image stack.

No Qt and no napari here: the widget hands in plain arrays and calls these methods from its
thread workers. Encoder calls are serialised per model by the embedding cache, one slice at a
time, so a click's decode never waits behind more than one slice of background precompute.

Index conventions: a stack of napari shape ``(*lead, Y, X)`` (plus a trailing RGB axis, or a
channel axis among the leading ones) has slice indices ``tuple`` of one int per leading
non-channel axis; ``()`` for a 2D image. Masks are (Y, X) bool, volumes (Z, Y, X) bool along
the last leading axis.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from napari_sam.embeddings import EmbeddingCache
    from napari_sam.model import Sam

Index = tuple[int, ...]
Progress = Callable[[int, int], None]


class StaleRequestError(RuntimeError):
    """The image or model changed while this request was waiting; its result is not wanted."""


@dataclass(frozen=True)
class ImageSpec:
    """What the widget segments: an image layer's data, described for the engine.

    Attributes
    ----------
    data : array-like
        The layer's data (numpy, dask or zarr), napari order, highest resolution level.
    rgb : bool
        True when the last axis holds colour channels (napari's ``layer.rgb``).
    channel_axis : int or None
        A leading axis holding channels (napari would show it as a slider), or None.
    name : str
        For messages.
    """

    data: Any
    rgb: bool = False
    channel_axis: int | None = None
    name: str = "image"

    @property
    def ndim(self) -> int:
        return len(self.data.shape)

    @property
    def lead_axes(self) -> tuple[int, ...]:
        """Axes of ``data`` that index slices (leading, not channels)."""
        n_lead = self.ndim - 2 - int(self.rgb)
        return tuple(a for a in range(n_lead) if a != self.channel_axis)

    @property
    def index_shape(self) -> tuple[int, ...]:
        return tuple(int(self.data.shape[a]) for a in self.lead_axes)

    @property
    def plane_shape(self) -> tuple[int, int]:
        end = self.ndim - int(self.rgb)
        return int(self.data.shape[end - 2]), int(self.data.shape[end - 1])

    @property
    def labels_shape(self) -> tuple[int, ...]:
        """Shape of a Labels layer that overlays this image: index shape + plane shape."""
        return self.index_shape + self.plane_shape

    @staticmethod
    def channel_axis_choices(shape: Sequence[int], rgb: bool) -> list[int]:
        """Leading axes of an image of ``shape`` that can hold channels: 1, 3 or 4 of them (SAM
        takes grey or RGB; a fourth, alpha, is dropped). An RGB image (``rgb``) has its
        channels last: no choice."""
        if rgb:
            return []
        n_lead = len(shape) - 2
        return [a for a in range(n_lead) if int(shape[a]) in (1, 3, 4)]

    def engine_channel_axis(self) -> int | None:
        """The channel axis as :class:`napari_sam.Segmenter` takes it."""
        return self.ndim - 1 if self.rgb else self.channel_axis


@dataclass
class EngineSession:
    """One model on one image stack; every method may block (call from a worker).

    Parameters
    ----------
    model : Sam
    image : ImageSpec
    cache : EmbeddingCache
        Of ``model``; shared by the sessions of one widget, so switching back to an image
        finds its embeddings.
    """

    model: Sam
    image: ImageSpec
    cache: EmbeddingCache

    def __post_init__(self) -> None:
        from napari_sam.segment import Segmenter

        self.segmenter = Segmenter(
            self.model, self.image.data, cache=self.cache, channel_axis=self.image.engine_channel_axis()
        )

    # -- embeddings ----------------------------------------------------------------------------
    @property
    def index_shape(self) -> tuple[int, ...]:
        return self.image.index_shape

    def check_index(self, index: Sequence[int]) -> Index:
        """``index`` as a tuple of ints inside the stack (ValueError otherwise)."""
        idx = tuple(int(i) for i in index)
        shape = self.index_shape
        if len(idx) != len(shape) or any(not 0 <= i < n for i, n in zip(idx, shape, strict=True)):
            raise ValueError(f"slice {idx} is outside the stack of slices {shape}")
        return idx

    def is_ready(self, index: Index) -> bool:
        """True when the embedding of slice ``index`` is cached (a decode will be quick)."""
        return bool(self.segmenter.embeddings.is_cached(self.check_index(index)))

    def encode(self, index: Index) -> None:
        """Compute (or load) the embedding of slice ``index``."""
        self.segmenter.embeddings.get(self.check_index(index))

    def precompute(self, start: Index, progress: Progress | None = None, cancel: Any = None) -> int:
        """Encode every slice, ``start`` first then outwards; cached slices are skipped.

        Returns the number of slices computed; stops early (without error) when cancelled.
        """
        start_idx = self.check_index(start) if start else None
        return int(
            self.segmenter.embeddings.precompute(start=start_idx, progress=progress, cancel=cancel)
        )

    def prefetch(self, indices: Sequence[Index], cancel: Any = None) -> None:
        """Encode ``indices`` in order unless cancelled (neighbours of the current slice)."""
        for idx in indices:
            if _is_set(cancel):
                return
            self.encode(idx)

    # -- segmentation ------------------------------------------------------------------------
    def segment(
        self,
        index: Index,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
    ) -> np.ndarray:
        """(Y, X) bool mask of one object on slice ``index`` from 2D prompts.

        ``points`` (N, 2) (row, col), ``point_labels`` (N,) 1/0, ``box`` (4,)
        (min_row, min_col, max_row, max_col), ``mask_input`` (Y, X) bool.
        """
        idx = self.check_index(index)
        has_points = points is not None and len(points) > 0
        mask = self.segmenter.segment(
            points=points if has_points else None,
            point_labels=point_labels if has_points else None,
            box=box,
            mask_input=mask_input,
            index=idx,
        )
        return np.asarray(mask, dtype=bool)

    def propagate(
        self,
        masks: dict[Index, np.ndarray],
        z_range: tuple[int, int] | None = None,
        stop_iou: float = 0.5,
        max_area_change: float = 2.5,
        progress: Progress | None = None,
        cancel: Any = None,
    ) -> np.ndarray:
        """Follow one object through the last leading axis (z) from its annotated slices.

        Parameters
        ----------
        masks : {index: (Y, X) bool}
            The object on one or more slices that differ only in z.
        z_range : (start, stop), optional
            Half-open range of z to fill; default the whole axis.
        stop_iou, max_area_change
            Stop criteria beyond the annotated slices (see ``Segmenter.propagate``).

        Returns
        -------
        (Z, Y, X) bool
        """
        if not self.index_shape:
            raise ValueError("propagation needs a stack: this image is 2D")
        if not masks:
            raise ValueError("nothing to propagate: segment the object on a slice first")
        items = sorted((self.check_index(i), m) for i, m in masks.items())
        (first, mask), *others = items
        vol = self.segmenter.propagate(
            mask,
            index=first,
            stop_iou=stop_iou,
            max_area_change=max_area_change,
            z_range=z_range,
            annotations={i: m for i, m in others} or None,
            progress=progress,
            cancel=cancel,
        )
        return np.asarray(vol, dtype=bool)

    def segment_everything(
        self,
        index: Index,
        whole_stack: bool = False,
        progress: Progress | None = None,
        cancel: Any = None,
        **options: Any,
    ) -> tuple[np.ndarray, Index]:
        """Instance labels of every object on slice ``index``, or through the whole stack.

        Returns
        -------
        labels : (Y, X) or (Z, Y, X) uint32
            Plain object numbers; with ``whole_stack`` objects keep one ID through z.
        where : tuple of int
            The leading index the labels sit at in the stack: ``index`` for one slice,
            ``index[:-1]`` for the whole stack.
        """
        idx = self.check_index(index)
        where = idx[:-1] if whole_stack and idx else idx
        labels = self.segmenter.segment_everything(
            index=where or None, progress=progress, cancel=cancel, **options
        )
        return np.asarray(labels), where


def _is_set(cancel: Any) -> bool:
    if cancel is None:
        return False
    probe = getattr(cancel, "is_set", None)
    if probe is not None:
        return bool(probe())
    return bool(cancel() if callable(cancel) else getattr(cancel, "cancelled", False))


def neighbours(index: Index, index_shape: Sequence[int], radius: int = 1) -> list[Index]:
    """Slices next to ``index`` along the last leading axis, nearest first, inside the stack."""
    if not index:
        return []
    *rest, z = index
    n = int(index_shape[-1])
    out: list[Index] = []
    for step in range(1, radius + 1):
        for cand in (z + step, z - step):
            if 0 <= cand < n:
                out.append((*rest, cand))
    return out


class EngineState:
    """The widget's current model and image, and the session built from them on demand.

    ``configure`` changes the model or image and returns a new *token*; work submitted under an
    older token gets :class:`StaleRequestError` from :meth:`session` instead of a session, so a
    result computed for the previous model or image is never used. Thread-safe: the model is
    loaded and the session built in whichever worker first needs them.

    Parameters
    ----------
    loader : callable
        ``loader(name_or_path, progress=..., cancel=...) -> Sam``; default
        :func:`napari_sam.load_model`.
    memory_budget : str
        Of the embedding cache shared by this widget's sessions.
    """

    def __init__(self, loader: Callable[..., Sam] | None = None, memory_budget: str = "2 GB") -> None:
        self._loader = loader
        self._memory_budget = memory_budget
        self._lock = threading.Lock()  # guards the fields below
        self._build = threading.Lock()  # one model load / session build at a time
        self.token = 0
        self.model_name: str | None = None
        self.image: ImageSpec | None = None
        self.model: Sam | None = None
        self._cache: EmbeddingCache | None = None
        self._session: EngineSession | None = None

    def configure(self, *, model_name: str | None = None, image: ImageSpec | None | bool = False) -> int:
        """Set the model (a registry name or a path) and/or the image (``None``: no image).

        Returns the new token. A changed model is loaded again on the next :meth:`session`.
        """
        with self._lock:
            if model_name is not None and model_name != self.model_name:
                self.model_name = model_name
                self.model = None
                self._cache = None
                self._session = None
            if image is not False:
                self.image = image  # type: ignore[assignment]
                self._session = None
            self.token += 1
            return self.token

    def check(self, token: int) -> None:
        """Raise :class:`StaleRequestError` if the model or image changed since ``token``."""
        if token != self.token:
            raise StaleRequestError("the model or image changed; result dropped")

    def load_model(self, token: int, progress: Progress | None = None, cancel: Any = None) -> Sam:
        """The model, loading it (and downloading it, with ``progress``) if needed.

        Concurrent callers wait for one load instead of loading twice.
        """
        with self._lock:
            self.check(token)
            if self.model is not None:
                return self.model
        with self._build:
            with self._lock:
                self.check(token)
                if self.model is not None:
                    return self.model
                name = self.model_name
            if name is None:
                raise ValueError("choose a model first")
            if self._loader is not None:
                model = self._loader(name, progress=progress, cancel=cancel)
            else:
                from napari_sam.weights import load_model

                model = load_model(name, progress=progress, cancel=cancel)
            from napari_sam.embeddings import EmbeddingCache

            with self._lock:
                self.check(token)
                self.model = model
                self._cache = EmbeddingCache(model, memory_budget=self._memory_budget)
                return model

    def session(self, token: int, progress: Progress | None = None, cancel: Any = None) -> EngineSession:
        """The session for the current model and image (building it if needed)."""
        model = self.load_model(token, progress, cancel)
        with self._lock:
            self.check(token)
            if self._session is not None:
                return self._session
        with self._build:
            with self._lock:
                self.check(token)
                if self._session is not None:
                    return self._session
                image, cache = self.image, self._cache
            if image is None or cache is None:
                raise ValueError("choose an image layer first")
            session = EngineSession(model, image, cache)  # reads planes for the intensity norm
            with self._lock:
                self.check(token)
                self._session = session
                return session

    def current_session(self) -> EngineSession | None:
        """The session if it is built (does not block)."""
        return self._session
