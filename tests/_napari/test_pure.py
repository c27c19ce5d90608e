"""The pure functions behind the widget, tested without a viewer."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_sam._napari.commit import apply_plans, plan_instances, plan_object
from napari_sam._napari.prompts import prompts_by_slice
from napari_sam._napari.session import EngineState, ImageSpec, StaleRequestError, neighbours
from napari_sam.labels import LabelScheme, LabelSpaceFullError

PANOPTIC = LabelScheme(divisor=1000, classes={1: "nucleus", 2: "mitotic"})


# -- prompts ----------------------------------------------------------------------------------
def test_points_are_grouped_by_slice_with_polarity() -> None:
    points = np.array([[2.2, 10, 11], [1.9, 20, 21], [5, 30, 31]])
    groups = prompts_by_slice(points, [True, False, True], [], lead_axes=(0,))
    assert sorted(groups) == [(2,), (5,)]
    np.testing.assert_array_equal(groups[(2,)].points, [[10, 11], [20, 21]])
    np.testing.assert_array_equal(groups[(2,)].labels, [1, 0])
    assert groups[(5,)].box is None


def test_last_box_on_a_slice_wins_and_is_min_max_ordered() -> None:
    old = np.array([[3, 0, 0], [3, 0, 5], [3, 5, 5], [3, 5, 0]])
    new = np.array([[3, 40, 30], [3, 40, 10], [3, 20, 10], [3, 20, 30]])
    groups = prompts_by_slice(np.zeros((0, 3)), [], [old, new], lead_axes=(0,))
    np.testing.assert_array_equal(groups[(3,)].box, [20, 10, 40, 30])
    assert len(groups[(3,)].points) == 0


def test_channel_axis_is_not_a_slice_axis() -> None:
    # (C, Z, Y, X) image with channel axis 0: only z indexes slices
    points = np.array([[1, 4, 10, 10], [0, 4, 12, 12]])
    groups = prompts_by_slice(points, [True, True], [], lead_axes=(1,))
    assert list(groups) == [(4,)]
    assert len(groups[(4,)].points) == 2


def test_2d_prompts_have_the_empty_index_and_a_stable_key() -> None:
    groups = prompts_by_slice(np.array([[5.0, 6.0]]), [True], [], lead_axes=())
    assert list(groups) == [()]
    again = prompts_by_slice(np.array([[5.0, 6.0]]), [True], [], lead_axes=())
    flipped = prompts_by_slice(np.array([[5.0, 6.0]]), [False], [], lead_axes=())
    assert groups[()].key() == again[()].key() != flipped[()].key()


def test_polarity_count_must_match_points() -> None:
    with pytest.raises(ValueError, match="polarity"):
        prompts_by_slice(np.zeros((2, 2)), [True], [], lead_axes=())


# -- image description ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "rgb", "channel_axis", "index_shape", "labels_shape"),
    [
        ((64, 80), False, None, (), (64, 80)),
        ((64, 80, 3), True, None, (), (64, 80)),
        ((7, 64, 80), False, None, (7,), (7, 64, 80)),
        ((3, 7, 64, 80), False, 0, (7,), (7, 64, 80)),
        ((2, 7, 64, 80, 3), True, None, (2, 7), (2, 7, 64, 80)),
    ],
)
def test_image_spec_shapes(shape, rgb, channel_axis, index_shape, labels_shape) -> None:
    spec = ImageSpec(np.zeros(shape, np.uint8), rgb=rgb, channel_axis=channel_axis)
    assert spec.index_shape == index_shape
    assert spec.labels_shape == labels_shape


@pytest.mark.parametrize(
    ("shape", "rgb", "choices"),
    [
        ((64, 80), False, []),
        ((64, 80, 3), True, []),
        ((3, 64, 80), False, [0]),
        ((7, 64, 80), False, []),  # 7 planes are z, not channels
        ((7, 3, 64, 80), False, [1]),  # (Z, C, Y, X): the picker offers axis 1
        ((3, 3, 64, 80), False, [0, 1]),
        ((2, 7, 64, 80, 3), True, []),
    ],
)
def test_channel_axis_choices_are_the_leading_axes_that_fit_sam(shape, rgb, choices) -> None:
    assert ImageSpec.channel_axis_choices(shape, rgb) == choices


def test_neighbours_stay_inside_the_stack_nearest_first() -> None:
    assert neighbours((0,), (5,), 2) == [(1,), (2,)]
    assert neighbours((1, 3), (2, 5), 1) == [(1, 4), (1, 2)]
    assert neighbours((), (), 2) == []


# -- commit plans ---------------------------------------------------------------------------
def test_new_object_gets_the_next_instance_of_its_class_in_the_whole_stack() -> None:
    target = np.zeros((3, 8, 8), np.uint32)
    target[0, 0, 0] = 2004  # class 2, instance 4, on another slice
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    plan = plan_object(target, mask, (1,), PANOPTIC, class_id=2)
    assert plan.label_ids == (2005,)
    assert plan.size == 9
    assert np.all(plan.indices[0] == 1)  # all on slice 1


def test_keep_mode_never_overwrites_other_objects() -> None:
    target = np.zeros((8, 8), np.uint32)
    target[3, 3] = 1001
    mask = np.ones((8, 8), bool)
    plan = plan_object(target, mask, (), PANOPTIC, class_id=1)
    new = target.copy()
    new[plan.indices] = plan.values
    assert plan.size == 63
    assert new[3, 3] == 1001


def test_refine_replaces_the_object_on_its_slice_only_and_keeps_its_id() -> None:
    target = np.zeros((2, 8, 8), np.uint32)
    target[:, 0:4, 0:4] = 2001
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    plan = plan_object(target, mask, (1,), PANOPTIC, class_id=None, label_id=2001)
    new = target.copy()
    new[plan.indices] = plan.values
    assert plan.label_ids == (2001,)
    np.testing.assert_array_equal(new[1] == 2001, mask)
    np.testing.assert_array_equal(new[0], target[0])


def test_refine_of_background_is_an_error() -> None:
    with pytest.raises(ValueError, match="label ID > 0"):
        plan_object(np.zeros((4, 4), np.uint32), np.ones((4, 4), bool), (), PANOPTIC, 1, label_id=0)


def test_instances_become_new_ids_of_the_class_in_order() -> None:
    target = np.zeros((6, 6), np.uint32)
    target[0, 0] = 1001
    inst = np.zeros((6, 6), np.int32)
    inst[0:2, 0:2] = 7  # overlaps the existing object at (0, 0): keep mode skips that pixel
    inst[4:6, 4:6] = 3
    plan = plan_instances(target, inst, (), PANOPTIC, class_id=1)
    new = target.copy()
    new[plan.indices] = plan.values
    assert plan.label_ids == (1002, 1003)
    assert new[0, 0] == 1001
    assert set(np.unique(new)) == {0, 1001, 1002, 1003}
    assert np.all(new[4:6, 4:6] == 1002)  # object 3 sorts first


def test_too_many_instances_is_a_clear_error() -> None:
    scheme = LabelScheme(divisor=3, classes={1: "a"})
    inst = np.arange(16).reshape(4, 4)
    with pytest.raises(LabelSpaceFullError, match="larger divisor"):
        plan_instances(np.zeros((4, 4), np.uint32), inst, (), scheme, class_id=1)


def test_mask_of_the_wrong_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        plan_object(np.zeros((2, 8, 8), np.uint32), np.ones((4, 4), bool), (0,), PANOPTIC, 1)


def test_applying_plans_is_one_undo_step_that_restores_exactly() -> None:
    from napari.layers import Labels

    data = np.zeros((3, 10, 10), np.uint32)
    data[0, :2, :2] = 1001
    layer = Labels(data)
    before = layer.data.copy()
    a = np.zeros((10, 10), bool)
    a[2:6, 2:6] = True
    plans = [
        plan_object(layer.data, a, (0,), PANOPTIC, None, label_id=1001),
        plan_object(layer.data, a, (2,), PANOPTIC, None, label_id=1001),
    ]
    apply_plans(layer, plans)
    assert np.count_nonzero(layer.data == 1001) == 32
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)
    layer.redo()
    assert np.count_nonzero(layer.data == 1001) == 32


# -- engine state ---------------------------------------------------------------------------
def test_work_for_an_old_model_or_image_is_stale() -> None:
    calls: list[str] = []
    gate = threading.Event()

    def loader(name: str, progress=None, cancel=None) -> object:
        calls.append(name)
        gate.wait(5)
        return object()

    state = EngineState(loader=loader)
    token = state.configure(model_name="a")
    result: list[BaseException] = []

    def load() -> None:
        try:
            state.load_model(token)
        except StaleRequestError as exc:
            result.append(exc)

    thread = threading.Thread(target=load)
    thread.start()
    state.configure(model_name="b")  # the user picks another model while "a" loads
    gate.set()
    thread.join(5)
    assert calls == ["a"]
    assert result and isinstance(result[0], StaleRequestError)
    assert state.model is None  # "a" was never installed
    with pytest.raises(StaleRequestError):
        state.check(token)
