"""Fixtures for the GUI tests: a small model file, a docked SamWidget, synthetic images.

GUI tests need a display with OpenGL: run them under a virtual X server,
``xvfb-run -a pytest tests/_napari`` (Qt's offscreen platform has no OpenGL for napari's
canvas). Without one they are skipped; the pure tests in ``test_pure.py`` always run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from napari_sam.training.synthetic import TRAIN_PRESET, make_image_2d, make_stack_3d
from napari_sam.weights import SHIPPED_DIR

TINY_SYNTH = SHIPPED_DIR / "tiny_synth.pt"
# NAPARI_SAM_GUI_TEST_MODEL: run the GUI tests with another trained model (a registry name or path)
TEST_MODEL = os.environ.get("NAPARI_SAM_GUI_TEST_MODEL", "")
HAS_TRAINED = bool(TEST_MODEL) or TINY_SYNTH.is_file()
needs_trained = pytest.mark.skipif(
    not HAS_TRAINED, reason="needs the trained tiny-synth weights (napari_sam/weights_data)"
)


def _has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) and (
            os.environ.get("QT_QPA_PLATFORM", "") != "offscreen"
        )
    return True


gui = pytest.mark.skipif(not _has_display(), reason="GUI test: run under xvfb-run (needs OpenGL)")


@pytest.fixture(scope="session")
def model_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    """"tiny-synth" when shipped, else a small random SAM saved to a file (same code path)."""
    if TEST_MODEL:
        return TEST_MODEL
    if TINY_SYNTH.is_file():
        return "tiny-synth"
    import torch

    from napari_sam.model import SamConfig, build_sam

    torch.manual_seed(0)
    config = SamConfig(
        img_size=256, embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=4,
        prompt_embed_dim=64, decoder_mlp_dim=128, iou_head_hidden_dim=64,
    )
    path = tmp_path_factory.mktemp("model") / "random_small.pt"
    torch.save({"model": build_sam(config).state_dict(), "config": config.to_dict()}, path)
    return str(path)


@pytest.fixture(scope="session")
def image_2d() -> tuple[np.ndarray, np.ndarray]:
    """(128, 128) uint16 nuclei and their instance labels."""
    return make_image_2d(replace(TRAIN_PRESET, shape=(128, 128), n_objects=(6, 8)), 3)


@pytest.fixture(scope="session")
def stack_3d() -> tuple[np.ndarray, np.ndarray]:
    """(12, 96, 96) uint16 nuclei stack and its labels."""
    return make_stack_3d(replace(TRAIN_PRESET, shape=(12, 96, 96), n_objects=(4, 6)), 5)


@pytest.fixture
def sam_widget(make_napari_viewer: Callable[..., Any], model_spec: str) -> Iterator[Callable[..., Any]]:
    """Factory: ``sam_widget(image, **add_image_kwargs) -> (viewer, widget)``, model loaded."""
    made: list[Any] = []

    def factory(image: np.ndarray | None = None, **kwargs: Any) -> tuple[Any, Any]:
        from napari_sam._napari.widget import SamWidget

        viewer = make_napari_viewer()
        if image is not None:
            viewer.add_image(image, **kwargs)
        widget = SamWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Segment Anything")
        made.append(widget)
        widget.model_name = model_spec
        widget.wait()
        return viewer, widget

    yield factory
    for widget in made:
        widget.close_session()


def object_centre(labels: np.ndarray, label: int) -> tuple[int, ...]:
    """A pixel inside object ``label`` (the one farthest from its border)."""
    from scipy import ndimage

    inside = np.pad(labels == label, 1)  # the array border counts as outside
    dist = ndimage.distance_transform_edt(inside)[(slice(1, -1),) * labels.ndim]
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(dist)), labels.shape))


def largest_object(labels: np.ndarray) -> int:
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    return int(ids[np.argmax(counts)])

