"""Regenerate the screenshots of the napari plugin in docs/images/.

Run under a display (on a headless Linux machine: ``xvfb-run -a python scripts/make_screenshots.py``):

    python scripts/make_screenshots.py [--model tiny-synth] [--out docs/images]

It opens the sample data from the plugin's own menu entries, opens the widget as the Plugins
menu does, segments objects with scripted clicks (exactly what a user's clicks do) and saves:

* ``widget_2d.png``: a 2D image, two committed nuclei of two classes, a live preview with a
  positive and a negative click;
* ``widget_3d.png``: a 3D stack at one slice after "propagate through z", preview and labels;
* ``widget_3d_volume.png``: the same committed objects rendered in 3D.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _centre(mask: np.ndarray) -> tuple[int, ...]:
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[(slice(1, -1),) * mask.ndim]
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(dist)), mask.shape))


def _objects(truth: np.ndarray, n: int) -> list[int]:
    ids, counts = np.unique(truth[truth > 0], return_counts=True)
    return [int(i) for i in ids[np.argsort(counts)[::-1][:n]]]


def _open(viewer, sample: str):  # noqa: ANN001, ANN202
    viewer.open_sample("napari-sam", sample)
    _, widget = viewer.window.add_plugin_dock_widget("napari-sam", "Segment Anything")
    return widget


def shot_2d(model: str, out: Path) -> None:
    import napari

    from napari_sam._napari.sample_data import SEED
    from napari_sam.training.synthetic import TRAIN_PRESET, make_image_2d

    _, truth = make_image_2d(TRAIN_PRESET, SEED)
    viewer = napari.Viewer(title="napari-sam: Segment Anything (2D)")
    viewer.window.resize(1500, 950)
    widget = _open(viewer, "nuclei_2d")
    widget.model_name = model
    widget.class_table.rename_class(1, "nucleus")
    widget.class_table.add_class("dividing", colour="#ff8c00")
    first, second, third = _objects(truth, 3)
    for label, class_id in ((first, 1), (second, 2)):
        widget.selected_class = class_id
        widget.points_layer.add(_centre(truth == label))
        widget.wait()
        widget.commit()
    widget.selected_class = 1
    widget.points_layer.add(_centre(truth == third))
    background = np.argwhere(truth == 0)
    near = background[np.argmin(np.abs(background - np.array(_centre(truth == third))).sum(axis=1))]
    widget.negative_mode = True
    widget.points_layer.add(near)
    widget.negative_mode = False
    widget.wait()
    viewer.layers.selection.active = widget.points_layer
    viewer.reset_view()
    viewer.screenshot(str(out / "widget_2d.png"), canvas_only=False)
    widget.close_session()
    viewer.close()


def shot_3d(model: str, out: Path) -> None:
    from dataclasses import replace

    import napari

    from napari_sam._napari.sample_data import SEED
    from napari_sam.training.synthetic import TRAIN_PRESET, make_stack_3d

    _, truth = make_stack_3d(replace(TRAIN_PRESET, shape=(32, 256, 256)), SEED)
    viewer = napari.Viewer(title="napari-sam: Segment Anything (3D)")
    viewer.window.resize(1500, 950)
    widget = _open(viewer, "nuclei_3d")
    widget.model_name = model
    widget.class_table.rename_class(1, "nucleus")
    widget.precompute()
    widget.wait()
    for label in _objects(truth, 3):
        z, r, c = _centre(truth == label)
        viewer.dims.set_current_step(0, z)
        widget.points_layer.add([z, r, c])
        widget.wait()
        widget.propagate()
        widget.wait()
        widget.commit()
    z, r, c = _centre(truth == _objects(truth, 4)[-1])
    viewer.dims.set_current_step(0, z)
    widget.points_layer.add([z, r, c])
    widget.wait()
    widget.propagate()
    widget.wait()
    viewer.layers.selection.active = widget.points_layer
    viewer.reset_view()
    viewer.screenshot(str(out / "widget_3d.png"), canvas_only=False)
    widget.clear_prompts()
    viewer.dims.ndisplay = 3
    widget.image_layer.rendering = "mip"
    widget.image_layer.opacity = 0.35
    viewer.reset_view()
    viewer.camera.angles = (-25, 35, 70)
    viewer.screenshot(str(out / "widget_3d_volume.png"), canvas_only=False)
    widget.close_session()
    viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-synth", help="registry name or checkpoint path")
    default_out = Path(__file__).resolve().parent.parent / "docs" / "images"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    # keep napari's one-off notice about the Qt binding out of the pictures
    import napari._qt.qt_main_window as main_window

    main_window.SHOW_QT_WARNING = False
    args.out.mkdir(parents=True, exist_ok=True)
    shot_2d(args.model, args.out)
    shot_3d(args.model, args.out)


if __name__ == "__main__":
    main()
