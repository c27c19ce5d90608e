"""The model registry, hash-checked downloads into the user cache, and loading models.

>>> import napari_sam as ns
>>> [m.name for m in ns.list_models()][:3]
['tiny-synth', 'vit_b', 'vit_l']
>>> model = ns.load_model()                          # tiny-synth, shipped in the package
>>> model = ns.load_model("vit_b", device="cpu")     # downloaded once, then from the cache
>>> model = ns.load_model("my_finetuned.pt")         # any SAM-format checkpoint

Downloads go to ``<cache>/weights/`` where ``<cache>`` is ``NAPARI_SAM_CACHE_DIR`` or the
platform's user cache folder for "napari-sam". A file placed there by hand under the name
:func:`model_path` gives is used as well, once its hash is checked.

The registry itself (names, URLs, hashes, and where they were checked) is in
:mod:`napari_sam._registry`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_sam._download import (
    ChecksumError,
    DownloadCancelled,
    DownloadError,
    MissingDependencyError,
    ProgressCallback,
    fetch,
    file_hashes,
    split_hash,
)
from napari_sam._registry import DEFAULT_MODEL, EVERYTHING_DEFAULTS, REGISTRY, SHIPPED, ModelInfo

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from napari_sam._checkpoint import CheckpointContents
    from napari_sam.model import Sam

__all__ = [
    "CACHE_ENV",
    "REGISTRY",
    "ChecksumError",
    "DownloadCancelled",
    "DownloadError",
    "MissingDependencyError",
    "ModelInfo",
    "UnknownModelError",
    "cache_dir",
    "clear_model_cache",
    "download",
    "list_models",
    "load_model",
    "model_path",
    "recommended_everything",
    "registered_name",
    "weights_hash",
    "write_sha256_sidecar",
]

CACHE_ENV = "NAPARI_SAM_CACHE_DIR"
SHIPPED_DIR = Path(__file__).resolve().parent / "weights_data"


class UnknownModelError(ValueError):
    """A name that is neither a registered model nor an existing file."""


def cache_dir() -> Path:
    """Return the napari-sam cache folder (weights and embeddings; not created here).

    ``NAPARI_SAM_CACHE_DIR`` if set, else the platform's user cache folder for "napari-sam".
    """
    override = os.environ.get(CACHE_ENV, "").strip()
    if override:
        return Path(override).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-sam", appauthor=False))


def _weights_dir() -> Path:
    return cache_dir() / "weights"


def _stamp_dir() -> Path:
    return _weights_dir() / ".hashes"


def _shipped_hash(path: Path) -> str | None:
    sidecar = path.with_suffix(".sha256")
    if sidecar.is_file():
        text = sidecar.read_text(encoding="utf-8").split()
        if text:
            return "sha256:" + text[0].lower()
    if path.is_file():
        return "sha256:" + weights_hash(path)
    return None


def _shipped_info(name: str) -> ModelInfo:
    filename, description = SHIPPED[name]
    path = SHIPPED_DIR / filename
    exists = path.is_file()
    return ModelInfo(
        name, "custom", path.stat().st_size if exists else None, None, _shipped_hash(path),
        is_cached=exists, description=description, filename=filename,
    )


def _entry(name: str, registry: Mapping[str, ModelInfo] | None = None) -> ModelInfo:
    if name in SHIPPED and (registry is None or name not in registry):
        return _shipped_info(name)
    entries = REGISTRY if registry is None else registry
    if name not in entries:
        known = ", ".join([*SHIPPED, *entries])
        raise UnknownModelError(
            f"unknown model {name!r}; registered models are: {known} "
            "(or pass the path of a checkpoint file)"
        )
    return entries[name]


def model_path(name: str, registry: Mapping[str, ModelInfo] | None = None) -> Path:
    """Where the weights of a registered model are (or will be, once downloaded)."""
    info = _entry(name, registry)
    if info.url is None:
        return SHIPPED_DIR / info.filename
    return _weights_dir() / info.filename


def list_models(registry: Mapping[str, ModelInfo] | None = None) -> list[ModelInfo]:
    """All registered models, the shipped default first, with ``is_cached`` as of now.

    A cached file counts only if its size is the published one (hashes are checked when the
    model is loaded).
    """
    infos = [_shipped_info(n) for n in SHIPPED if registry is None or n not in registry]
    for info in (REGISTRY if registry is None else registry).values():
        path = _weights_dir() / info.filename
        size = path.stat().st_size if path.is_file() else None
        cached = size is not None and info.size_bytes in (None, size)
        infos.append(dataclasses.replace(info, is_cached=cached))
    return infos


def download(
    name: str,
    progress: ProgressCallback | None = None,
    cancel: Any = None,
    *,
    registry: Mapping[str, ModelInfo] | None = None,
) -> Path:
    """The path of a registered model's weights, downloading them first if needed.

    A file already in the cache is used without network access once its hash is checked
    (the full hash is computed once and remembered while the file is unchanged).

    Parameters
    ----------
    name
        A registry name (see :func:`list_models`).
    progress
        Called as ``progress(done_bytes, total_bytes)`` while downloading.
    cancel
        Cancel token: a callable returning True, or an object with ``is_set()``.
    registry
        Entries to use instead of :data:`REGISTRY` (tests, mirrors).

    Raises
    ------
    UnknownModelError, ChecksumError, DownloadError, DownloadCancelled, MissingDependencyError
    CheckpointNotFoundError
        (a FileNotFoundError) for shipped weights missing from the installation.
    """
    info = _entry(name, registry)
    path = model_path(name, registry)
    if info.url is None:
        if not path.is_file():
            from napari_sam._checkpoint import CheckpointNotFoundError

            raise CheckpointNotFoundError(
                f"the weights of {name!r} are not in this installation (expected at {path}); "
                "reinstall napari-sam, or create them with the training script"
            )
        if info.known_hash is not None:
            _check_file_hash(path, info.known_hash, name)
        return path
    if info.known_hash is None:
        raise ChecksumError(f"registry entry {name!r} has no hash; refusing to download unchecked")
    return fetch(
        info.url, info.known_hash, path, progress=progress, cancel=cancel, stamp_dir=_stamp_dir()
    )


def _check_file_hash(path: Path, known_hash: str, name: str) -> None:
    algorithm, digest = split_hash(known_hash)
    actual = file_hashes(path, [algorithm, "sha256"], _stamp_dir())[algorithm]
    if actual != digest:
        raise ChecksumError(
            f"{path} ({name}) has {algorithm} {actual} but {path.with_suffix('.sha256').name} "
            f"says {digest}; the file was changed without updating its hash file (rewrite it "
            "with the new hash) or is damaged (reinstall napari-sam)"
        )


def weights_hash(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a weights file (computed once, remembered while unchanged)."""
    return file_hashes(path, ["sha256"], _stamp_dir())["sha256"]


def write_sha256_sidecar(path: str | os.PathLike[str]) -> str:
    """Write ``<path minus suffix>.sha256`` next to a weights file; return the hex digest.

    The shipped weights are checked against this file on every load (cheaply: see
    :mod:`napari_sam._download`), so a training run that replaces them should call this.
    """
    file = Path(path)
    digest = weights_hash(file)
    file.with_suffix(".sha256").write_text(f"{digest}  {file.name}\n", encoding="utf-8")
    return digest


# In-process cache of parsed checkpoints, so loading the same small file again is quick.
# Bounded in bytes: big models are re-read from disk rather than held twice in memory.
_STATE_CACHE_BYTES = 128 * 2**20
_state_cache: OrderedDict[tuple[str, int, int], tuple[CheckpointContents, str, int]] = OrderedDict()
_state_lock = threading.Lock()


def clear_model_cache() -> None:
    """Forget checkpoints kept in memory by :func:`load_model`."""
    with _state_lock:
        _state_cache.clear()


def _read_cached(path: Path) -> tuple[CheckpointContents, str]:
    from napari_sam._checkpoint import load_checkpoint

    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _state_lock:
        if key in _state_cache:
            _state_cache.move_to_end(key)
            contents, sha256, _ = _state_cache[key]
            return contents, sha256
    contents = load_checkpoint(path)
    sha256 = weights_hash(path)
    nbytes = sum(t.numel() * t.element_size() for t in contents.state_dict.values())
    if nbytes <= _STATE_CACHE_BYTES:
        with _state_lock:
            _state_cache[key] = (contents, sha256, nbytes)
            while sum(n for *_, n in _state_cache.values()) > _STATE_CACHE_BYTES:
                _state_cache.popitem(last=False)
    return contents, sha256


def registered_name(name_or_path: str | os.PathLike[str] | None) -> str | None:
    """The registry name a model reference stands for, without loading anything: None -> the
    default model; a registered name -> itself; the path of a shipped weights file -> that
    model's name (the same model); any other path -> None."""
    if name_or_path is None:
        return DEFAULT_MODEL
    if isinstance(name_or_path, str) and (name_or_path in REGISTRY or name_or_path in SHIPPED):
        return name_or_path
    path = Path(name_or_path).expanduser()
    for shipped, (filename, _) in SHIPPED.items():
        if path.is_file() and path.resolve() == (SHIPPED_DIR / filename).resolve():
            return shipped
    return None


def recommended_everything(name_or_path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Segment-everything settings recommended for a model reference (often none): what
    :func:`load_model` attaches as ``model.everything_defaults``."""
    return dict(EVERYTHING_DEFAULTS.get(registered_name(name_or_path) or "", {}))


def _source(
    name_or_path: str | os.PathLike[str] | None, progress: ProgressCallback | None, cancel: Any
) -> tuple[str, Path]:
    name = registered_name(name_or_path)
    if name is not None and name_or_path in (None, name):  # a name, not a path: fetch it
        return name, download(name, progress, cancel)
    path = Path(name_or_path).expanduser()  # type: ignore[arg-type]
    if path.is_file():
        return name or path.stem, path.resolve()
    text = str(name_or_path)
    if isinstance(name_or_path, str) and not any(c in text for c in "/\\.~"):
        _entry(text)  # raises UnknownModelError listing the names
    from napari_sam._checkpoint import CheckpointNotFoundError

    where = "is a folder, not a checkpoint file" if path.is_dir() else "does not exist"
    raise CheckpointNotFoundError(
        f"checkpoint {path} {where}; check the path, or use a registered model name: "
        + ", ".join([*SHIPPED, *REGISTRY])
    )


def load_model(
    name_or_path: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    precision: str | None = None,
    *,
    progress: ProgressCallback | None = None,
    cancel: Any = None,
) -> Sam:
    """Load a SAM model by registry name or from a checkpoint file, ready for inference.

    Parameters
    ----------
    name_or_path
        ``None`` (tiny-synth, shipped), a registry name (downloaded on first use, then read
        from the cache), or the path of a SAM-format checkpoint (architecture inferred).
    device
        ``None``/``"auto"`` (``NAPARI_SAM_DEVICE`` or cuda > mps > cpu), or a device name.
    precision
        ``None``/``"auto"`` (``NAPARI_SAM_PRECISION`` or the automatic choice), ``"fp32"``,
        ``"bf16"`` or ``"fp16"``. Weights stay float32; inference code runs the model under
        :func:`napari_sam.devices.autocast_for` with ``model.precision``.
    progress, cancel
        Passed to :func:`download`.

    Returns
    -------
    Sam
        In eval mode on the device, with ``model.name``, ``model.weights_hash`` (sha256 hex of
        the file), ``model.precision``, ``model.config`` and ``model.everything_defaults`` (the
        registry's recommended segment-everything settings for this model, often empty) set.

    Raises
    ------
    UnknownModelError, CheckpointNotFoundError, CheckpointError (and its subclasses, e.g.
    ArchitectureMismatchError), ChecksumError, DownloadError, DeviceError
    """
    from napari_sam._checkpoint import ArchitectureMismatchError
    from napari_sam.devices import resolve_device, resolve_precision
    from napari_sam.model import ArchitectureError, SamConfig, build_sam, check_state_dict, infer_config

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    name, path = _source(name_or_path, progress, cancel)
    contents, sha256 = _read_cached(path)
    fields = {f.name for f in dataclasses.fields(SamConfig)}
    hints = {k: v for k, v in (contents.config or {}).items() if k in fields}
    try:
        config = infer_config(contents.state_dict, hints)
        model = build_sam(config)
        check_state_dict(model, contents.state_dict)
    except ArchitectureError as exc:
        raise ArchitectureMismatchError(
            f"{path} does not hold weights of a SAM model napari-sam can build: {exc}. "
            "Pass a checkpoint of SAM, MobileSAM or a model fine-tuned from them",
            path,
        ) from exc
    model.load_state_dict(contents.state_dict, strict=True)
    model = model.eval().to(dev)
    model.name = name
    model.weights_hash = sha256
    model.precision = prec
    model.everything_defaults = recommended_everything(name)
    return model
