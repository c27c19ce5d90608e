"""Reading SAM checkpoint files safely, whatever wrapper the training code put around them.

Files are always read with ``torch.load(weights_only=True, map_location="cpu")``: only
tensors and plain containers are unpickled, never arbitrary Python objects.

Accepted layouts:

- a plain state dict, as the official SAM / MobileSAM checkpoints are;
- a state dict under a wrapper key (``"model_state"`` as torch-em / micro-sam write it,
  ``"state_dict"``, ``"model"``, ``"sam"``, ...), possibly nested;
- key prefixes from wrappers (``"sam."``, ``"module."`` from DataParallel, ``"model."``,
  ``"_orig_mod."`` from torch.compile) are stripped;
- tensors outside SAM's three parts (e.g. an extra instance-segmentation decoder or a
  classification head) are dropped with a :class:`CheckpointWarning` naming a few.

A model config stored next to the weights (under ``"config"``, ``"sam_config"`` or
``"model_config"``, as :meth:`napari_sam.model.SamConfig.to_dict` writes it) is returned too:
it carries the sizes that tensor shapes cannot tell.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from napari_sam.model import ArchitectureError

__all__ = [
    "ArchitectureMismatchError",
    "CheckpointContents",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CheckpointWarning",
    "CorruptCheckpointError",
    "EmptyCheckpointError",
    "NotACheckpointError",
    "UnsafeCheckpointError",
    "load_checkpoint",
    "read_checkpoint",
]

SAM_PARTS = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
WRAPPER_KEYS = ("model_state", "state_dict", "model_state_dict", "model", "sam", "module", "net", "weights")
CONFIG_KEYS = ("config", "sam_config", "model_config")
PREFIXES = ("module.", "_orig_mod.", "model.", "sam.")
# Non-persistent buffers of SAM that some checkpoints carry anyway; dropped silently.
_CONSTANTS = ("pixel_mean", "pixel_std")
_MAX_DEPTH = 4


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names the file and what to do."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None


class CheckpointNotFoundError(FileNotFoundError):
    """No file at the given checkpoint path."""


class NotACheckpointError(CheckpointError):
    """The file is not a PyTorch checkpoint at all (an image, a text file, ...)."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds pickled Python objects that are not allowed under ``weights_only``."""


class CorruptCheckpointError(CheckpointError):
    """The file is a PyTorch checkpoint but truncated or damaged."""


class EmptyCheckpointError(CheckpointError):
    """The file loads but holds no SAM weights."""


class ArchitectureMismatchError(CheckpointError, ArchitectureError):
    """The weights do not fit any SAM model we can build (keys or shapes differ)."""


class CheckpointWarning(UserWarning):
    """Something in a checkpoint was ignored (e.g. tensors of an extra head)."""


@dataclass
class CheckpointContents:
    """What a checkpoint file holds, in our terms.

    Attributes
    ----------
    state_dict
        ``{key: tensor}`` with official SAM key names (``"image_encoder.blocks.0..."``), on CPU.
    config
        Model config fields stored with the weights (``SamConfig.to_dict()``), or ``None``.
    dropped
        Keys that were ignored because they belong to no part of SAM.
    """

    state_dict: dict[str, Tensor]
    config: dict[str, Any] | None = None
    dropped: list[str] = field(default_factory=list)


_SIGNATURES = (
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x93NUMPY", "a NumPy .npy file"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"PAR1", "a Parquet file"),
)


def _sniff(path: Path) -> str | None:
    """``None`` if the file starts like a torch checkpoint, else what it looks like."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and 2 <= head[1] <= 5):
        return None  # torch's zip format, or its legacy format (a pickle, protocol 2..5)
    for magic, kind in _SIGNATURES:
        if head.startswith(magic):
            return kind
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 28:
        return "a safetensors file (not supported yet)"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "not a PyTorch file (unknown binary format)"
    return "not a PyTorch file (unknown binary format)" if b"\x00" in head else "a text file"


def _torch_load(path: Path) -> Any:
    kind = _sniff(path)
    if kind == "empty":
        raise CorruptCheckpointError(
            f"{path} is empty (0 bytes), probably an interrupted download or copy; delete it "
            "and download or copy it again",
            path,
        )
    if kind is not None:
        raise NotACheckpointError(
            f"{path} is {kind}, not a PyTorch checkpoint; pass the .pt/.pth weights file of a "
            "SAM model instead",
            path,
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found is None and "truncated" in str(exc):
            raise _corrupt(path, exc) from exc
        what = f" ({found.group(1)})" if found else ""
        raise UnsafeCheckpointError(
            f"{path} contains pickled Python objects{what} besides tensors, which are not "
            "loaded for safety (torch.load weights_only=True). If you trust the file, save its "
            "state dict alone once, in a session you trust: sd = torch.load(path, "
            "weights_only=False); torch.save(<the model's state dict inside sd>, 'weights.pt')",
            path,
        ) from exc
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as exc:
        raise _corrupt(path, exc) from exc


def _corrupt(path: Path, exc: BaseException) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"{path} is a damaged or truncated PyTorch checkpoint ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0][:160] if str(exc) else 'no details'}); download or copy it again",
        path,
    )


def _strip(key: str) -> str:
    changed = True
    while changed and not key.startswith(SAM_PARTS):
        changed = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _has_sam_tensors(mapping: Mapping[Any, Any]) -> bool:
    return any(
        isinstance(k, str) and isinstance(v, Tensor) and _strip(k).startswith(SAM_PARTS)
        for k, v in mapping.items()
    )


def _find_state_dict(obj: Any, depth: int = 0) -> Mapping[str, Any] | None:
    if not isinstance(obj, Mapping) or depth > _MAX_DEPTH:
        return None
    if _has_sam_tensors(obj):
        return obj
    for key in WRAPPER_KEYS:
        found = _find_state_dict(obj.get(key), depth + 1)
        if found is not None:
            return found
    return None


def _find_config(obj: Any) -> dict[str, Any] | None:
    if not isinstance(obj, Mapping):
        return None
    for key in CONFIG_KEYS:
        value = obj.get(key)
        if isinstance(value, Mapping) and value and all(isinstance(k, str) for k in value):
            return dict(value)
    for key in WRAPPER_KEYS:
        found = _find_config(obj.get(key))
        if found is not None:
            return found
    return None


def _describe_keys(obj: Any) -> str:
    if not isinstance(obj, Mapping):
        return f"it holds a {type(obj).__name__}, not a dict of tensors"
    keys = [str(k) for k in list(obj)[:6]]
    more = f" (+{len(obj) - 6} more)" if len(obj) > 6 else ""
    return f"top-level keys: {', '.join(keys) or '(none)'}{more}"


def load_checkpoint(path: str | os.PathLike[str]) -> CheckpointContents:
    """Read a checkpoint file into a SAM state dict (and a stored config, if any).

    Parameters
    ----------
    path
        A ``.pt`` / ``.pth`` file written by ``torch.save``.

    Returns
    -------
    CheckpointContents
        The state dict with official key names, the stored config (or ``None``), and the
        keys that were dropped.

    Raises
    ------
    CheckpointNotFoundError
        No such file.
    NotACheckpointError
        The file is an image, text, ... and not a PyTorch checkpoint.
    UnsafeCheckpointError
        The file needs Python objects that ``weights_only`` loading refuses.
    CorruptCheckpointError
        The file is empty, truncated or damaged.
    EmptyCheckpointError
        The file loads but holds no SAM weights.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        where = "is a folder, not a file" if file.is_dir() else "does not exist"
        raise CheckpointNotFoundError(
            f"checkpoint {file} {where}; check the path (or pass a registered model name, "
            "see napari_sam.list_models())"
        )
    raw = _torch_load(file)
    found = _find_state_dict(raw)
    if found is None:
        raise EmptyCheckpointError(
            f"{file} holds no SAM weights (no tensors under image_encoder/prompt_encoder/"
            f"mask_decoder, also not under {', '.join(WRAPPER_KEYS[:4])}, ...); "
            f"{_describe_keys(raw)}. Pass a checkpoint of a SAM model",
            file,
        )
    state: dict[str, Tensor] = {}
    dropped: list[str] = []
    for key, value in found.items():
        name = _strip(str(key))
        if isinstance(value, Tensor) and name.startswith(SAM_PARTS):
            state[name] = value
        elif name not in _CONSTANTS:
            dropped.append(str(key))
    if dropped:
        more = f" (+{len(dropped) - 5} more)" if len(dropped) > 5 else ""
        warnings.warn(
            f"{file}: ignored {len(dropped)} entries that are not part of SAM "
            f"(e.g. {', '.join(dropped[:5])}{more})",
            CheckpointWarning,
            stacklevel=2,
        )
    return CheckpointContents(state_dict=state, config=_find_config(raw), dropped=dropped)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The SAM state dict in a checkpoint file, with official key names, on CPU.

    See :func:`load_checkpoint` for the layouts accepted and the errors raised.
    """
    return load_checkpoint(path).state_dict
