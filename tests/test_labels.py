"""Tests for napari_sam.labels: schemes, non-clobbering mask writes, metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from napari_sam.labels import (
    PALETTE,
    ClassInfo,
    LabelMetadataError,
    LabelScheme,
    LabelSpaceFullError,
    choose_dtype,
    colormap_dict,
    from_metadata,
    merge_panoptic,
    relabel,
    split_panoptic,
    to_metadata,
    write_mask,
)


@pytest.fixture
def scheme() -> LabelScheme:
    return LabelScheme(divisor=1000, classes={1: "nucleus", 2: "mitotic"})


def box_mask(shape: tuple[int, ...], *index: slice | int) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[index] = True
    return mask


# --- schemes and class tables -------------------------------------------------------


def test_encode_decode_matches_contract(scheme: LabelScheme) -> None:
    assert scheme.encode(class_id=2, instance_id=7) == 2007
    labels = np.array([[0, 1000, 1003], [2007, 2999, 0]], np.uint32)
    classes, instances = scheme.decode(labels)
    assert classes.shape == instances.shape == labels.shape
    np.testing.assert_array_equal(classes, [[0, 1, 1], [2, 2, 0]])
    np.testing.assert_array_equal(instances, [[0, 0, 3], [7, 999, 0]])


def test_plain_scheme_decodes_to_class_zero() -> None:
    labels = np.array([0, 5, 70000], np.int64)
    classes, instances = LabelScheme().decode(labels)
    np.testing.assert_array_equal(classes, 0)
    np.testing.assert_array_equal(instances, labels)
    assert LabelScheme().encode(None, 12) == 12


def test_decode_narrow_dtype_smaller_than_divisor(scheme: LabelScheme) -> None:
    classes, instances = scheme.decode(np.array([3, 200], np.uint8))
    np.testing.assert_array_equal(classes, 0)
    np.testing.assert_array_equal(instances, [3, 200])


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"divisor": 1}, ValueError),
        ({"divisor": 0}, ValueError),
        ({"divisor": 10.0}, TypeError),
        ({"divisor": 10, "classes": {0: "bg"}}, ValueError),
        ({"divisor": 10, "classes": {-2: "x"}}, ValueError),
        ({"divisor": None, "classes": {1: "x"}}, ValueError),
        ({"divisor": 10, "classes": {1: ClassInfo(2, "x")}}, ValueError),
        ({"divisor": 10, "classes": {1: ""}}, ValueError),
    ],
)
def test_invalid_schemes_are_rejected(kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        LabelScheme(**kwargs)


@pytest.mark.parametrize(("cls", "inst"), [(0, 1), (-1, 1), (1, 1000), (1, -1), (None, 3)])
def test_encode_out_of_range_raises(scheme: LabelScheme, cls: int | None, inst: int) -> None:
    with pytest.raises(ValueError):
        scheme.encode(cls, inst)


def test_class_table_editing(scheme: LabelScheme) -> None:
    assert scheme.classes[1].colour != scheme.classes[2].colour
    assert len(set(PALETTE)) == len(PALETTE)
    added = scheme.add_class("debris", colour="#00ff00")
    assert added.id == 3 and scheme.classes[3] is added
    assert added.colour == (0.0, 1.0, 0.0, 1.0) and added.hex == "#00ff00ff"
    assert scheme.rename_class(1, "nuclei").name == "nuclei"
    assert scheme.classes[1].name == "nuclei"
    assert scheme.recolour_class(2, (0.1, 0.2, 0.3)).colour == (0.1, 0.2, 0.3, 1.0)
    with pytest.raises(ValueError, match="already used"):
        scheme.add_class("again", class_id=3)
    with pytest.raises(ValueError, match="not in the class table"):
        scheme.rename_class(9, "x")
    with pytest.raises(ValueError):
        scheme.recolour_class(1, "#zzzzzz")
    with pytest.raises(ValueError):
        scheme.recolour_class(1, (2.0, 0.0, 0.0))


def test_class_info_accepts_hex_and_floats() -> None:
    assert ClassInfo(1, "a", "#f80").colour == pytest.approx((1.0, 0.533, 0.0, 1.0), abs=1e-3)
    assert ClassInfo(1, "a", [0, 0, 1, 0.5]).colour == (0.0, 0.0, 1.0, 0.5)
    with pytest.raises(TypeError):
        ClassInfo(1, "a", 5)  # type: ignore[arg-type]


def test_max_instance(scheme: LabelScheme) -> None:
    assert scheme.max_instance() == 999
    assert LabelScheme().max_instance() == 2**32 - 1
    assert LabelScheme().max_instance(np.uint16) == 65535


# --- next_instance and exhaustion ---------------------------------------------------


def test_next_instance_is_max_plus_one_per_class(scheme: LabelScheme) -> None:
    labels = np.array([[1001, 1005, 2002], [0, 1000, 0]], np.uint32)
    assert scheme.next_instance(labels, 1) == 6  # gap at 2..4 is not reused
    assert scheme.next_instance(labels, 2) == 3
    assert scheme.next_instance(np.zeros((2, 2), np.uint32), 2) == 1
    assert LabelScheme().next_instance(np.array([0, 3, 9], np.uint16)) == 10


def test_next_instance_fills_gap_when_top_is_used() -> None:
    small = LabelScheme(divisor=10, classes={1: "a", 2: "b"})
    labels = np.array([11, 12, 14, 19, 21], np.uint32)
    assert small.next_instance(labels, 1) == 3


def test_id_exhaustion_raises_clear_error() -> None:
    small = LabelScheme(divisor=10, classes={1: "a", 2: "b"})
    labels = np.zeros((2, 9), np.uint32)
    for n in range(1, 10):
        assert write_mask(labels, box_mask(labels.shape, 0, n - 1), small, 1) == 10 + n
    with pytest.raises(LabelSpaceFullError, match=r"all 9 .* class 1 \('a'\)") as info:
        write_mask(labels, box_mask(labels.shape, 1), small, 1)
    assert isinstance(info.value, ValueError)
    np.testing.assert_array_equal(labels[1], 0)  # nothing written, no wrap-around
    np.testing.assert_array_equal(labels[0], np.arange(11, 20))
    assert write_mask(labels, box_mask(labels.shape, 1), small, 2) == 21


def test_plain_exhaustion_suggests_wider_dtype() -> None:
    labels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    with pytest.raises(LabelSpaceFullError, match="uint32"):
        LabelScheme().next_instance(labels)


# --- write_mask ---------------------------------------------------------------------


def test_keep_mode_fills_background_only(scheme: LabelScheme) -> None:
    labels = np.zeros((4, 4), np.uint32)
    labels[0, :] = 2001
    new_id = write_mask(labels, box_mask((4, 4), slice(0, 2)), scheme, class_id=1)
    assert new_id == 1001
    np.testing.assert_array_equal(labels[0], 2001)
    np.testing.assert_array_equal(labels[1], 1001)
    np.testing.assert_array_equal(labels[2:], 0)


def test_replace_mode_overwrites_mask(scheme: LabelScheme) -> None:
    labels = np.full((4, 4), 2001, np.uint32)
    assert write_mask(labels, box_mask((4, 4), slice(0, 2)), scheme, 1, mode="replace") == 1001
    np.testing.assert_array_equal(labels[:2], 1001)
    np.testing.assert_array_equal(labels[2:], 2001)


def test_same_class_mode_protects_other_classes(scheme: LabelScheme) -> None:
    labels = np.array([[0, 1001, 2001, 1000]], np.uint32)
    new_id = write_mask(labels, np.ones((1, 4), bool), scheme, 1, mode="same_class")
    assert new_id == 1002
    np.testing.assert_array_equal(labels, [[1002, 1002, 2001, 1002]])


def test_same_class_in_plain_scheme_acts_like_replace() -> None:
    labels = np.array([[0, 3, 4]], np.uint32)
    assert write_mask(labels, np.ones((1, 3), bool), LabelScheme(), mode="same_class") == 5
    np.testing.assert_array_equal(labels, 5)


def test_explicit_instance_extends_object_through_z(scheme: LabelScheme) -> None:
    labels = np.zeros((3, 4, 4), np.uint32)
    first = write_mask(labels[0], box_mask((4, 4), slice(1, 3)), scheme, 2)
    again = write_mask(labels[1], box_mask((4, 4), slice(1, 3)), scheme, 2, instance_id=1)
    assert first == again == 2001
    assert (labels == 2001).sum() == 16 and not labels[2].any()


def test_write_with_offset(scheme: LabelScheme) -> None:
    labels = np.zeros((2, 6, 6), np.uint16)
    write_mask(labels, np.ones((1, 2, 3), bool), scheme, 1, offset=(1, 4, 2))
    assert set(zip(*np.nonzero(labels))) == {(1, r, c) for r in (4, 5) for c in (2, 3, 4)}
    with pytest.raises(ValueError, match="does not fit"):
        write_mask(labels, np.ones((1, 3, 3), bool), scheme, 1, offset=(1, 4, 2))


def test_empty_mask_returns_id_and_writes_nothing(scheme: LabelScheme) -> None:
    labels = np.zeros((3, 3), np.uint32)
    assert write_mask(labels, np.zeros((3, 3), bool), scheme, 1) == 1001
    assert not labels.any()
    labels[:] = 2004
    assert write_mask(labels, np.ones((3, 3), bool), scheme, 2) == 2005  # keep: nothing free
    np.testing.assert_array_equal(labels, 2004)


def test_mask_for_one_plane_needs_a_view(scheme: LabelScheme) -> None:
    with pytest.raises(ValueError, match=r"labels\[z\]"):
        write_mask(np.zeros((2, 3, 3), np.uint32), np.ones((3, 3), bool), scheme, 1)


def test_integer_01_mask_accepted_plain_scheme() -> None:
    labels = np.zeros((2, 2), np.int32)
    assert write_mask(labels, np.array([[1, 0], [0, 1]]), LabelScheme()) == 1
    np.testing.assert_array_equal(labels, [[1, 0], [0, 1]])


@pytest.mark.parametrize(
    ("labels", "mask", "kwargs", "error", "match"),
    [
        (np.zeros((3, 3), np.uint32), np.ones((3, 4), bool), {"class_id": 1}, ValueError, "shape"),
        (np.zeros((3, 3), np.uint32), np.full((3, 3), 2), {"class_id": 1}, TypeError, "0 and 1"),
        (np.zeros((3, 3), np.uint32), np.ones((3, 3)), {"class_id": 1}, TypeError, "boolean"),
        (np.zeros((3, 3), np.uint8), np.ones((3, 3), bool), {"class_id": 1}, TypeError, "uint32"),
        (np.zeros((3, 3), np.float32), np.ones((3, 3), bool), {"class_id": 1}, TypeError, "int"),
        (np.zeros((3, 3), np.uint32), np.ones((3, 3), bool), {}, ValueError, "class_id"),
        (np.zeros((3, 3), np.uint32), np.ones((3, 3), bool), {"class_id": 5}, ValueError, "known"),
        (np.zeros((3, 3), np.uint32), np.ones((3, 3), bool), {"class_id": 1, "mode": "x"},
         ValueError, "mode"),
        (np.zeros((3, 3), np.uint32), np.ones((3, 3), bool), {"class_id": 1, "instance_id": 1000},
         ValueError, "divisor"),
    ],
)
def test_write_mask_errors(scheme: LabelScheme, labels, mask, kwargs, error, match) -> None:
    before = labels.copy()
    with pytest.raises(error, match=match):
        write_mask(labels, mask, scheme, **kwargs)
    np.testing.assert_array_equal(labels, before)


def test_plain_scheme_rejects_class_and_readonly() -> None:
    labels = np.zeros((2, 2), np.uint32)
    with pytest.raises(ValueError, match="class_id=None"):
        write_mask(labels, np.ones((2, 2), bool), LabelScheme(), class_id=1)
    labels.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        write_mask(labels, np.ones((2, 2), bool), LabelScheme())
    with pytest.raises(TypeError, match="numpy array"):
        write_mask([[0, 0]], np.ones((1, 2), bool), LabelScheme())  # type: ignore[arg-type]


def test_choose_dtype() -> None:
    assert choose_dtype() == np.uint32
    assert choose_dtype(np.zeros(2, np.uint8)) == np.uint32
    assert choose_dtype(np.int32) == np.uint32
    assert choose_dtype(np.zeros(2, np.uint64)) == np.uint64
    assert choose_dtype(np.int64) == np.int64
    assert choose_dtype(np.float64) == np.uint32


# --- relabel, split/merge -------------------------------------------------------------


def test_relabel_changes_divisor(scheme: LabelScheme) -> None:
    labels = np.array([[0, 1003, 2999], [1000, 2001, 0]], np.uint32)
    wide = LabelScheme(divisor=10000, classes=scheme.classes)
    out = relabel(labels, scheme, wide)
    np.testing.assert_array_equal(out, [[0, 10003, 20999], [10000, 20001, 0]])
    assert out.dtype == np.uint32 and labels[0, 1] == 1003  # input untouched
    np.testing.assert_array_equal(relabel(out, wide, scheme), labels)


def test_relabel_instance_too_large_errors(scheme: LabelScheme) -> None:
    narrow = LabelScheme(divisor=100, classes=scheme.classes)
    with pytest.raises(ValueError, match="divisor 100"):
        relabel(np.array([1150], np.uint32), scheme, narrow)
    with pytest.raises(ValueError, match="class 3"):
        relabel(np.array([3001], np.uint32), scheme, narrow)


def test_relabel_plain_and_panoptic(scheme: LabelScheme) -> None:
    plain = np.array([0, 4, 9, 4], np.uint32)
    pan = relabel(plain, LabelScheme(), scheme, class_id=2)
    np.testing.assert_array_equal(pan, [0, 2004, 2009, 2004])
    with pytest.raises(ValueError, match="class_id"):
        relabel(plain, LabelScheme(), scheme)
    back = relabel(np.array([0, 1001, 2001, 1001, 2000]), scheme, LabelScheme())
    np.testing.assert_array_equal(back, [0, 1, 3, 1, 2])  # distinct objects stay distinct


def test_split_merge_round_trip(scheme: LabelScheme) -> None:
    labels = np.array([[0, 1001, 1002], [2000, 2005, 0]], np.uint32)
    semantic, instance = split_panoptic(labels, scheme)
    np.testing.assert_array_equal(semantic, [[0, 1, 1], [2, 2, 0]])
    np.testing.assert_array_equal(instance, [[0, 1, 2], [0, 5, 0]])
    merged = merge_panoptic(semantic, instance, scheme)
    np.testing.assert_array_equal(merged, labels)
    assert merged.dtype == np.uint32
    with pytest.raises(ValueError, match="divisor=None"):
        split_panoptic(labels, LabelScheme())


@pytest.mark.parametrize(
    ("semantic", "instance", "match"),
    [
        ([1, 0], [1, 2], "class 0"),
        ([1, 3], [1, 2], "class 3"),
        ([1, 1], [1, 1000], "divisor"),
        ([1], [1, 2], "shapes"),
    ],
)
def test_merge_errors(scheme: LabelScheme, semantic, instance, match) -> None:
    with pytest.raises(ValueError, match=match):
        merge_panoptic(np.array(semantic), np.array(instance), scheme)


def test_merge_large_ids_use_uint64() -> None:
    big = LabelScheme(divisor=10**9, classes={5: "x"})
    out = merge_panoptic(np.array([5], np.uint32), np.array([7], np.uint32), big)
    assert out.dtype == np.uint64 and int(out[0]) == 5 * 10**9 + 7
    assert merge_panoptic(np.array([5]), np.array([2]), big).dtype == np.int64  # already wider


# --- metadata and colours -------------------------------------------------------------


def test_metadata_round_trip_through_json(scheme: LabelScheme) -> None:
    scheme.add_class("debris", "#123456")
    meta = json.loads(json.dumps(to_metadata(scheme)))
    assert meta["version"] == 1
    assert from_metadata(meta) == scheme
    assert from_metadata({"napari_sam": meta, "other": 1}) == scheme
    assert from_metadata(to_metadata(LabelScheme())) == LabelScheme()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m.pop("format"),
        lambda m: m.update(version=99),
        lambda m: m.update(version="1"),
        lambda m: m.update(divisor="1000"),
        lambda m: m.update(divisor=1),
        lambda m: m.pop("classes"),
        lambda m: m.update(classes={"1": "x"}),
        lambda m: m["classes"][0].pop("name"),
        lambda m: m["classes"][0].update(colour="blue"),
        lambda m: m["classes"].append(dict(m["classes"][0])),
    ],
)
def test_corrupt_metadata_raises(scheme: LabelScheme, mutate) -> None:
    meta = to_metadata(scheme)
    mutate(meta)
    with pytest.raises(LabelMetadataError):
        from_metadata(meta)


def test_metadata_not_a_mapping() -> None:
    with pytest.raises(LabelMetadataError):
        from_metadata(None)  # type: ignore[arg-type]


def test_colormap_dict(scheme: LabelScheme) -> None:
    cmap = colormap_dict(scheme, np.array([0, 1001, 1002, 1000, 2003, 9001]))
    assert cmap[0][3] == 0.0 and cmap[None] == cmap[9001]  # background clear, unknown grey
    assert cmap[1000] == scheme.classes[1].colour
    assert cmap[1001] != cmap[1002]
    red = np.array([cmap[1001][:3], cmap[1002][:3]])
    green = np.array(cmap[2003][:3])
    assert np.all(np.abs(red - scheme.classes[1].colour[:3]).max(axis=1) <= 0.3)
    assert np.abs(green - red).max() > 0.3  # classes stay distinguishable
    plain = colormap_dict(LabelScheme(), [1, 2, 3])
    assert len({plain[i] for i in (1, 2, 3)}) == 3
    assert colormap_dict(scheme, []) == {None: cmap[None], 0: cmap[0]}


# --- property tests -------------------------------------------------------------------


@given(divisor=st.integers(2, 10**6), cls=st.integers(1, 4000), data=st.data())
def test_encode_decode_round_trip(divisor: int, cls: int, data: st.DataObject) -> None:
    inst = data.draw(st.integers(0, divisor - 1))
    scheme = LabelScheme(divisor=divisor)
    label = scheme.encode(cls, inst)
    classes, instances = scheme.decode(np.array([label], np.uint64))
    assert (int(classes[0]), int(instances[0])) == (cls, inst)


DIV = 10
TABLE = {1: "a", 2: "b", 3: "c"}
label_arrays = hnp.arrays(
    np.uint16, (4, 5), elements=st.sampled_from([0, 0, 0, 10, 11, 12, 21, 22, 30, 35])
)
masks = hnp.arrays(bool, (4, 5))


@settings(max_examples=60, deadline=None)
@given(labels=label_arrays, mask=masks, cls=st.sampled_from([1, 2, 3]))
def test_keep_never_changes_labelled_pixels(labels: np.ndarray, mask: np.ndarray, cls: int) -> None:
    before = labels.copy()
    new_id = write_mask(labels, mask, LabelScheme(DIV, TABLE), cls, mode="keep")
    labelled = before != 0
    np.testing.assert_array_equal(labels[labelled], before[labelled])
    np.testing.assert_array_equal(labels[~labelled & mask], new_id)
    np.testing.assert_array_equal(labels[~mask], before[~mask])


@settings(max_examples=60, deadline=None)
@given(labels=label_arrays, mask=masks, cls=st.sampled_from([1, 2, 3]))
def test_same_class_never_changes_other_classes(labels, mask, cls) -> None:
    before = labels.copy()
    new_id = write_mask(labels, mask, LabelScheme(DIV, TABLE), cls, mode="same_class")
    other = (before != 0) & (before // DIV != cls)
    np.testing.assert_array_equal(labels[other], before[other])
    np.testing.assert_array_equal(labels[mask & ~other], new_id)
    np.testing.assert_array_equal(labels[~mask], before[~mask])


@settings(max_examples=60, deadline=None)
@given(labels=label_arrays, mask=masks, cls=st.sampled_from([1, 2, 3]))
def test_replace_only_touches_mask(labels, mask, cls) -> None:
    before = labels.copy()
    new_id = write_mask(labels, mask, LabelScheme(DIV, TABLE), cls, mode="replace")
    np.testing.assert_array_equal(labels[~mask], before[~mask])
    np.testing.assert_array_equal(labels[mask], new_id)
    assert new_id // DIV == cls and new_id not in before[before // DIV == cls]
