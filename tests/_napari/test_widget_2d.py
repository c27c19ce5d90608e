"""The widget on 2D images: the npe2 entry, click -> preview -> commit, undo, classes, robustness."""

from __future__ import annotations

import numpy as np
import pytest
from gui_helpers import gui, largest_object, needs_trained, object_centre

pytestmark = gui


def test_opens_from_the_plugins_menu_entry(make_napari_viewer, image_2d) -> None:
    viewer = make_napari_viewer()
    viewer.add_image(image_2d[0], name="nuclei")
    _, widget = viewer.window.add_plugin_dock_widget("napari-sam", "Segment Anything")
    try:
        assert type(widget).__name__ == "SamWidget"
        assert widget.image_layer is not None and widget.image_layer.name == "nuclei"
        roles = sorted(layer.metadata.get("napari_sam_role", "") for layer in viewer.layers)
        assert roles == ["", "boxes", "points", "preview"]
        # closing the dock (its x button) ends the session and takes the prompt layers away
        viewer.window.remove_dock_widget(widget)
        assert [layer.name for layer in viewer.layers] == ["nuclei"]
    finally:
        widget.close_session()


def test_click_preview_commit_writes_a_panoptic_id(sam_widget, image_2d) -> None:
    image, truth = image_2d
    viewer, widget = sam_widget(image, name="nuclei")
    widget.selected_class = 1
    widget.class_table.add_class("mitotic")
    widget.selected_class = 2
    target = largest_object(truth)
    widget.points_layer.add(object_centre(truth, target))
    assert bool(widget.points_layer.features["positive"].iloc[-1]) is True
    widget.wait()
    preview = widget.preview_layer.data > 0
    assert preview.any()
    label_id = widget.commit()
    assert label_id == 2001  # class 2, instance 1
    labels = widget.labels_layer.data
    np.testing.assert_array_equal(labels == 2001, preview)
    assert widget.labels_layer.metadata["napari_sam"]["divisor"] == 1000
    names = [c["name"] for c in widget.labels_layer.metadata["napari_sam"]["classes"]]
    assert names == ["object", "mitotic"]
    # prompts and preview are cleared for the next object
    assert len(widget.points_layer.data) == 0 and not widget.preview_layer.data.any()
    # the next object of the same class is instance 2
    other = [i for i in np.unique(truth) if i and i != target][0]
    widget.points_layer.add(object_centre(truth, other))
    widget.wait()
    assert widget.commit() == 2002


def test_undo_after_commit_restores_the_labels_exactly(sam_widget, image_2d) -> None:
    image, truth = image_2d
    viewer, widget = sam_widget(image)
    widget.points_layer.add(object_centre(truth, 1))
    widget.wait()
    widget.commit()
    before = widget.labels_layer.data.copy()
    widget.points_layer.add(object_centre(truth, 2))
    widget.wait()
    widget.commit()
    assert not np.array_equal(widget.labels_layer.data, before)
    widget.labels_layer.undo()
    np.testing.assert_array_equal(widget.labels_layer.data, before)


def test_negative_mode_and_ctrl_polarity_are_features(sam_widget, image_2d) -> None:
    image, truth = image_2d
    viewer, widget = sam_widget(image)
    widget.negative_mode = True
    widget.points_layer.add([10, 10])
    widget.negative_mode = False
    widget.points_layer.add([20, 20])
    assert list(widget.points_layer.features["positive"]) == [False, True]
    colours = widget.points_layer.face_color
    assert not np.allclose(colours[0], colours[1])  # negative and positive look different


def _click(layer, position, modifiers=()) -> None:
    """A mouse click on ``layer`` through napari's own mouse machinery (press, release)."""
    from types import SimpleNamespace

    from napari.utils._proxies import ReadOnlyWrapper
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    for kind, run in (("mouse_press", mouse_press_callbacks), ("mouse_release", mouse_release_callbacks)):
        event = SimpleNamespace(
            type=kind, is_dragging=False, modifiers=list(modifiers), position=tuple(position),
            pos=np.zeros(2), view_direction=None, up_direction=None, dims_displayed=[0, 1],
            handled=False,
        )
        run(layer, ReadOnlyWrapper(event, exceptions=("handled",)))


def test_shift_click_places_a_negative_point(sam_widget, image_2d) -> None:
    viewer, widget = sam_widget(image_2d[0])
    layer = widget.points_layer
    assert layer.mode == "add"
    _click(layer, (30, 40), modifiers=["Shift"])
    _click(layer, (50, 60))
    np.testing.assert_allclose(layer.data, [[30, 40], [50, 60]])
    assert list(layer.features["positive"]) == [False, True]
    widget.negative_mode = True
    _click(layer, (70, 80), modifiers=["Shift"])  # in negative mode Shift-click is positive
    assert list(layer.features["positive"]) == [False, True, True]


@needs_trained
def test_negative_click_shrinks_the_object(sam_widget, image_2d) -> None:
    image, truth = image_2d
    viewer, widget = sam_widget(image)
    a = largest_object(truth)
    widget.points_layer.add(object_centre(truth, a))
    widget.wait()
    first = int((widget.preview_layer.data > 0).sum())
    # a negative click on the part of the preview farthest from the object's centre
    preview = widget.preview_layer.data > 0
    rows, cols = np.nonzero(preview & (truth != a))
    if rows.size == 0:
        rows, cols = np.nonzero(preview)
    centre = np.array(object_centre(truth, a))
    far = int(np.argmax((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2))
    widget.negative_mode = True
    widget.points_layer.add([rows[far], cols[far]])
    widget.wait()
    assert int((widget.preview_layer.data > 0).sum()) < first


def _box_around(truth: np.ndarray, label: int) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(truth == label)
    return rows.min() - 2, cols.min() - 2, rows.max() + 2, cols.max() + 2


def test_a_drawn_box_is_a_prompt(sam_widget, image_2d) -> None:
    image, truth = image_2d
    viewer, widget = sam_widget(image)
    r0, c0, r1, c1 = _box_around(truth, largest_object(truth))
    widget.boxes_layer.add_rectangles(np.array([[r0, c0], [r1, c1]]))
    widget.wait()
    (prompt,) = widget.prompts.current().values()
    np.testing.assert_allclose(prompt.box, [r0, c0, r1, c1])
    assert len(prompt.points) == 0
    segmenter = widget.engine.current_session().segmenter
    assert () in segmenter.last_scores  # the box alone was decoded
    widget.clear_prompts()
    assert widget.boxes_layer.nshapes == 0 and not widget.preview_layer.data.any()


@needs_trained
def test_box_prompt_gives_the_object_in_the_box(sam_widget, image_2d) -> None:
    image, truth = image_2d
    viewer, widget = sam_widget(image)
    target = largest_object(truth)
    r0, c0, r1, c1 = _box_around(truth, target)
    widget.boxes_layer.add_rectangles(np.array([[r0, c0], [r1, c1]]))
    widget.wait()
    preview = widget.preview_layer.data > 0
    true = truth == target
    iou = (preview & true).sum() / (preview | true).sum()
    assert iou > 0.5


def test_class_table_edits_reach_the_layer_metadata_and_colours(sam_widget, image_2d) -> None:
    image, truth = image_2d
    viewer, widget = sam_widget(image)
    widget.points_layer.add(object_centre(truth, 1))
    widget.wait()
    widget.commit()
    info = widget.class_table.add_class("dividing", colour="#00ff00")
    widget.class_table.rename_class(1, "nucleus")
    widget.class_table.recolour_class(1, "#ff0000")
    meta = widget.labels_layer.metadata["napari_sam"]
    assert [(c["id"], c["name"]) for c in meta["classes"]] == [(1, "nucleus"), (info.id, "dividing")]
    colour = widget.labels_layer.colormap.map(np.array([1001]))[0]
    assert colour[0] > 0.6 and colour[1] < 0.4  # object 1001 shows its class's red
    assert widget.selected_class == info.id
    with pytest.raises(ValueError, match="not in the class table"):
        widget.selected_class = 99


def test_refine_keeps_the_id_and_corrects_the_object(sam_widget, image_2d) -> None:
    image, truth = image_2d
    viewer, widget = sam_widget(image)
    widget.points_layer.add(object_centre(truth, 1))
    widget.wait()
    label_id = widget.commit()
    layer = widget.labels_layer
    layer.selected_label = label_id
    widget.refine()
    assert np.array_equal(widget.preview_layer.data > 0, layer.data == label_id)
    widget.points_layer.add(object_centre(truth, 1))
    widget.wait()
    assert widget.commit() == label_id
    assert set(np.unique(layer.data)) <= {0, label_id}


def test_deleting_layers_mid_session_does_not_break_the_widget(sam_widget, image_2d) -> None:
    image, truth = image_2d
    viewer, widget = sam_widget(image)
    widget.points_layer.add(object_centre(truth, 1))
    widget.wait()
    widget.commit()
    viewer.layers.remove(widget.labels_layer)
    viewer.layers.remove(widget.prompts.points)
    viewer.layers.remove(widget.prompts.preview)
    widget.wait()
    assert widget.labels_layer is None
    # the prompt layers come back on use, and a commit makes a new labels layer
    widget.points_layer.add(object_centre(truth, 2))
    widget.wait()
    assert widget.commit() == 1001
    assert widget.labels_layer in viewer.layers
    # deleting the image itself leaves an idle widget
    viewer.layers.remove(widget.image_layer)
    widget.wait()
    assert widget.image_layer is None
    with pytest.raises(ValueError, match="image"):
        widget.points_layer  # noqa: B018


def test_switching_image_mid_computation_never_writes_stale_results(sam_widget, image_2d) -> None:
    image, truth = image_2d
    viewer, widget = sam_widget(image, name="first")
    first_preview = widget.preview_layer
    widget.points_layer.add(object_centre(truth, 1))  # decode starts (debounced) ...
    widget.flow.debounce.stop()
    widget.flow.decode_changed()  # ... and is running now
    second = viewer.add_image(np.ascontiguousarray(image[::-1]), name="second")
    widget.image_layer = second  # switch before it finishes
    widget.wait()
    assert first_preview not in viewer.layers  # the old prompt layers went with the old image
    assert not widget.preview_layer.data.any()  # the first image's result was dropped
    assert len(widget.points_layer.data) == 0


def test_model_name_is_validated(sam_widget, image_2d) -> None:
    viewer, widget = sam_widget(image_2d[0])
    with pytest.raises(ValueError, match="unknown model"):
        widget.model_name = "no-such-model"


def test_keys_toggle_negative_mode_commit_and_clear(sam_widget, image_2d, qtbot) -> None:
    from qtpy.QtCore import Qt

    image, truth = image_2d
    viewer, widget = sam_widget(image)
    viewer.layers.selection.active = widget.points_layer
    canvas = viewer.window._qt_viewer.canvas.native  # where napari listens for keys

    qtbot.keyClick(canvas, Qt.Key_N)
    assert widget.negative_mode is True
    qtbot.keyClick(canvas, Qt.Key_N)
    assert widget.negative_mode is False

    widget.points_layer.add(object_centre(truth, 1))
    widget.wait()
    qtbot.keyClick(canvas, Qt.Key_C, Qt.ShiftModifier)  # Shift-C: clear
    assert len(widget.points_layer.data) == 0 and not widget.preview_layer.data.any()

    widget.points_layer.add(object_centre(truth, 1))
    widget.wait()
    qtbot.keyClick(canvas, Qt.Key_C)  # C: commit
    assert widget.labels_layer is not None and widget.labels_layer.data.max() == 1001


def test_everything_thresholds_and_channel_axes_follow_model_and_image(make_napari_viewer, image_2d) -> None:
    """The default model's recommended thresholds show before it is loaded (it loads lazily);
    a (Z, C=3, Y, X) image offers its channel axis 1."""
    from napari_sam._napari.widget import SamWidget
    from napari_sam.segment import EverythingParams
    from napari_sam.weights import recommended_everything

    viewer = make_napari_viewer()
    plane = image_2d[0]
    viewer.add_image(np.stack([np.stack([plane] * 3)] * 2), name="zc")  # (Z=2, C=3, Y, X)
    widget = SamWidget(viewer)
    try:
        expected = EverythingParams(**recommended_everything(None))
        assert widget.panels.pred_iou.value() == pytest.approx(expected.pred_iou_thresh)
        assert widget.panels.stability.value() == pytest.approx(expected.stability_score_thresh)
        box = widget.panels.channel_axis
        assert [box.itemData(i) for i in range(box.count())] == [None, 1]
    finally:
        widget.close_session()
