"""The widget on a 3D stack: slices, propagation, segment everything, responsiveness."""

from __future__ import annotations

import time

import numpy as np
from gui_helpers import gui, largest_object, needs_trained, object_centre

pytestmark = gui


def _click_object(viewer, widget, truth, label) -> tuple[int, int, int]:
    z, r, c = object_centre(truth, label)
    viewer.dims.set_point(0, z * widget.image_layer.scale[0])  # world coordinates
    widget.points_layer.add([z, r, c])
    widget.wait()
    return z, r, c


def test_clicks_decode_their_own_slice(sam_widget, stack_3d) -> None:
    stack, truth = stack_3d
    viewer, widget = sam_widget(stack, scale=(2.0, 1.0, 1.0))  # anisotropic z, as the sample
    z, _, _ = _click_object(viewer, widget, truth, largest_object(truth))
    assert widget.current_index() == (z,)
    assert tuple(widget.points_layer.scale) == (2.0, 1.0, 1.0)
    per_slice = (widget.preview_layer.data > 0).sum(axis=(1, 2))
    assert per_slice[z] > 0
    assert per_slice.sum() == per_slice[z]  # nothing on other slices


def test_propagate_then_commit_writes_one_id_on_many_slices(sam_widget, stack_3d) -> None:
    stack, truth = stack_3d
    viewer, widget = sam_widget(stack)
    target = largest_object(truth)
    z, _, _ = _click_object(viewer, widget, truth, target)
    # with an untrained test model propagation may stop at once; relax the stop criteria
    widget.panels.stop_iou.setValue(0.0)
    widget.panels.max_area_change.setValue(100.0)
    widget.propagate()
    widget.wait()
    filled = np.flatnonzero((widget.preview_layer.data > 0).any(axis=(1, 2)))
    assert len(filled) > 1 and z in filled
    label_id = widget.commit()
    labels = widget.labels_layer.data
    assert set(np.unique(labels)) == {0, label_id}
    np.testing.assert_array_equal(np.flatnonzero((labels > 0).any(axis=(1, 2))), filled)
    widget.labels_layer.undo()  # the whole volume is one undo step
    assert not widget.labels_layer.data.any()


@needs_trained
def test_propagation_follows_the_true_object(sam_widget, stack_3d) -> None:
    stack, truth = stack_3d
    viewer, widget = sam_widget(stack)
    target = largest_object(truth)
    _click_object(viewer, widget, truth, target)
    widget.propagate()
    widget.wait()
    volume = widget.preview_layer.data > 0
    true = truth == target
    assert (volume & true).sum() / (volume | true).sum() > 0.4


def test_segment_everything_on_a_slice_and_the_stack(sam_widget, stack_3d) -> None:
    stack, truth = stack_3d
    viewer, widget = sam_widget(stack)
    widget.panels.points_per_side.setValue(8)
    widget.panels.pred_iou.setValue(0.0)
    widget.panels.stability.setValue(0.0)
    widget.panels.max_area.setValue(1.0)  # the untrained test model's masks are large
    viewer.dims.set_current_step(0, 6)
    widget.segment_everything()
    widget.wait()
    layer = widget.labels_layer
    assert layer is not None
    found = np.flatnonzero(layer.data.reshape(len(layer.data), -1).any(axis=1))
    assert list(found) == [6]
    ids = np.unique(layer.data[layer.data > 0])
    assert ids.size >= 1 and np.all(ids // 1000 == 1)  # panoptic, class 1
    before = layer.data.copy()
    widget.segment_everything(whole_stack=True)
    widget.wait()
    assert np.all(layer.data[before > 0] == before[before > 0])  # keep mode: nothing overwritten
    assert (layer.data.reshape(len(layer.data), -1).any(axis=1)).sum() > 1
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)


def test_neighbouring_slices_are_encoded_while_idle(sam_widget, stack_3d, qtbot) -> None:
    stack, _ = stack_3d
    viewer, widget = sam_widget(stack)
    viewer.dims.set_current_step(0, 6)

    def neighbours_ready() -> bool:
        session = widget.engine.current_session()
        return session is not None and all(session.is_ready((z,)) for z in (4, 5, 6, 7, 8))

    qtbot.waitUntil(neighbours_ready, timeout=60_000)
    session = widget.engine.current_session()
    assert not session.is_ready((0,))  # only the neighbourhood, not the whole stack
    assert "slice 6" in widget.panels.status.text()


def test_cancel_stops_a_precompute(sam_widget, stack_3d) -> None:
    stack, _ = stack_3d
    viewer, widget = sam_widget(stack)
    widget.precompute()
    widget.cancel()
    widget.wait()
    session = widget.engine.current_session()
    assert session is not None
    assert not all(session.is_ready((z,)) for z in range(len(stack)))


def test_event_loop_keeps_ticking_during_a_3d_precompute(sam_widget, stack_3d, record_property) -> None:
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    stack, _ = stack_3d
    stack = np.concatenate([stack, stack[:, ::-1], stack[:, :, ::-1]])  # 36 distinct slices
    viewer, widget = sam_widget(stack)
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    start = time.perf_counter()
    widget.precompute()
    app = QApplication.instance()
    while widget.runner.busy() and time.perf_counter() - start < 120:
        app.processEvents()
        time.sleep(0.001)
    timer.stop()
    session = widget.engine.current_session()
    assert all(session.is_ready((z,)) for z in range(len(stack)))
    gaps = np.diff(ticks)
    longest_ms = float(gaps.max() * 1000)
    record_property("longest_event_loop_stall_ms", round(longest_ms, 1))
    print(f"\nlongest event-loop stall during precompute: {longest_ms:.1f} ms over {len(ticks)} ticks")
    assert longest_ms < 500  # target < 100 ms; CI machines are noisy


def test_rgb_and_4d_images(sam_widget, image_2d, stack_3d) -> None:
    image, truth = image_2d
    rgb = np.repeat((image / image.max() * 255).astype(np.uint8)[..., None], 3, axis=-1)
    viewer, widget = sam_widget(rgb, rgb=True)
    assert widget.spec.labels_shape == image.shape
    widget.points_layer.add(object_centre(truth, 1))
    assert widget.commit() == 1001
    assert widget.labels_layer.data.shape == image.shape

    stack, struth = stack_3d
    timelapse = viewer.add_image(np.stack([stack, stack[:, ::-1]]), name="t,z")
    widget.image_layer = timelapse
    viewer.dims.set_current_step(0, 1)
    viewer.dims.set_current_step(1, 4)
    assert widget.current_index() == (1, 4)
    widget.points_layer.add([1, 4, 48, 48])
    widget.wait()
    preview = widget.preview_layer.data
    assert preview.shape == (2, *stack.shape)
    assert preview[1, 4].any() and not preview[0].any()
    label_id = widget.commit()
    assert widget.labels_layer.data.shape == (2, *stack.shape)  # a new target for the new shape
    assert np.flatnonzero(widget.labels_layer.data.reshape(-1) == label_id).size > 0
