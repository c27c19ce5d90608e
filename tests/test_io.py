"""napari_sam.io: lazy image reading, label results with metadata, prompt files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import zarr

from napari_sam.io import (
    InputError,
    OutputExistsError,
    PromptFileError,
    check_in_stack,
    expand_inputs,
    image_signature,
    open_image,
    open_stack,
    provenance,
    read_labels,
    read_prompts,
    write_labels,
)
from napari_sam.labels import LabelScheme


@pytest.fixture
def stack() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 4000, size=(4, 32, 40), dtype=np.uint16)


# -- images --------------------------------------------------------------------------------------
def test_uncompressed_tiff_is_memory_mapped(tmp_path, stack):
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    image = open_image(path)
    assert isinstance(image.data, np.memmap)
    assert image.axes == "ZYX"
    np.testing.assert_array_equal(image.data, stack)


def test_compressed_tiff_is_read_lazily_through_zarr(tmp_path, stack):
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, stack, compression="zlib", tile=(16, 16), photometric="minisblack")
    image = open_image(path)
    assert not isinstance(image.data, np.ndarray)  # a zarr view, read on indexing
    np.testing.assert_array_equal(np.asarray(image.data[2]), stack[2])


def test_ome_tiff_axes_are_used_and_singletons_dropped(tmp_path, stack):
    path = tmp_path / "s.ome.tif"
    tifffile.imwrite(path, stack[None, :, None], metadata={"axes": "TZCYX"})
    image = open_image(path)
    assert image.axes == "ZYX" and image.shape == stack.shape
    two_channels = np.stack([stack, stack // 2], axis=1)  # (Z, C, Y, X)
    path2 = tmp_path / "c.ome.tif"
    tifffile.imwrite(path2, two_channels, metadata={"axes": "ZCYX"})
    image = open_image(path2)
    assert image.axes == "ZYXC" and image.shape == (4, 32, 40, 2)
    np.testing.assert_array_equal(np.asarray(image.data[1, :, :, 1]), stack[1] // 2)
    picked = open_stack(path2, channel=1)
    assert picked.axes == "ZYX"
    with pytest.raises(InputError, match="--channel"):
        open_stack(path2)


def test_zarr_and_ome_zarr_level_0(tmp_path, stack):
    arr = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=stack.shape, chunks=(1, 32, 40),
                          dtype=stack.dtype)
    arr[:] = stack
    assert open_image(tmp_path / "a.zarr").axes == "ZYX"
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    level0 = group.create_array("0", shape=(1, 4, 32, 40), chunks=(1, 1, 32, 40), dtype="u2")
    level0[:] = stack[None]
    group.create_array("1", shape=(1, 4, 16, 20), dtype="u2")
    group.attrs["multiscales"] = [{
        "axes": [{"name": "c", "type": "channel"}, {"name": "z"}, {"name": "y"}, {"name": "x"}],
        "datasets": [{"path": "0"}, {"path": "1"}],
    }]
    image = open_image(tmp_path / "g.zarr")
    assert image.axes == "ZYX" and image.shape == stack.shape
    np.testing.assert_array_equal(np.asarray(image.data[3]), stack[3])


def test_unsupported_inputs_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_image(tmp_path / "missing.tif")
    np.save(tmp_path / "four_d.npy", np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(InputError, match="2D .* or 3D"):
        open_stack(tmp_path / "four_d.npy")
    np.save(tmp_path / "empty.npy", np.zeros((0, 8, 8), np.uint8))
    with pytest.raises(InputError, match="empty"):
        open_image(tmp_path / "empty.npy")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="unsupported image format"):
        open_image(tmp_path / "notes.txt")
    (tmp_path / "bad.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match="not a readable TIFF"):
        open_image(tmp_path / "bad.tif")


def test_folder_expands_to_its_images(tmp_path, stack):
    for name in ("b.tif", "a.tif", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    zarr.open_array(str(tmp_path / "c.zarr"), mode="w", shape=(2, 2), dtype="u1")
    assert [p.name for p in expand_inputs(tmp_path)] == ["a.tif", "b.tif", "c.zarr"]
    assert expand_inputs(tmp_path / "c.zarr") == [tmp_path / "c.zarr"]  # a store is one image
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images"):
        expand_inputs(empty)


def test_signature_follows_content_not_storage(tmp_path, stack):
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    tifffile.imwrite(tmp_path / "z.tif", stack, compression="zlib", photometric="minisblack")
    a = image_signature(open_image(tmp_path / "s.tif").data)
    assert a == image_signature(open_image(tmp_path / "z.tif").data) == image_signature(stack)
    changed = stack.copy()
    changed[3, 5, 5] += 1
    assert image_signature(changed) != a


# -- label results -------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_labels_round_trip_with_scheme_and_record(tmp_path, suffix):
    labels = np.zeros((3, 20, 30), np.uint32)
    labels[1, 2:6, 3:9] = 2007
    scheme = LabelScheme(divisor=1000, classes={1: "nucleus", 2: "mitotic"})
    path = write_labels(tmp_path / f"out{suffix}", labels, scheme, {"model": {"name": "x"}})
    back, scheme2, record = read_labels(path)
    np.testing.assert_array_equal(np.asarray(back[...]), labels)
    assert scheme2.divisor == 1000 and scheme2.info(2).name == "mitotic"
    assert record == {"model": {"name": "x"}}
    if suffix == ".tif":  # the record is also readable without napari-sam
        side = json.loads((tmp_path / "out.json").read_text())
        assert side["napari_sam"]["divisor"] == 1000
        with tifffile.TiffFile(path) as tif:
            assert json.loads(tif.pages[0].description)["napari_sam"]["record"]["model"]["name"] == "x"


def test_existing_output_is_never_overwritten_unless_asked(tmp_path):
    labels = np.ones((8, 8), np.uint16)
    path = write_labels(tmp_path / "m.tif", labels)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_labels(path, labels * 2)
    assert read_labels(path)[0].max() == 1
    write_labels(path, labels * 2, overwrite=True)
    assert read_labels(path)[0].max() == 2
    (tmp_path / "n.json").write_text("{}")  # the sidecar counts too
    with pytest.raises(OutputExistsError):
        write_labels(tmp_path / "n.tif", labels)
    with pytest.raises(InputError, match=".tif, .tiff or .zarr"):
        write_labels(tmp_path / "m.png", labels)


def test_labels_stream_from_a_zarr_array(tmp_path):
    src = zarr.open_array(str(tmp_path / "src.zarr"), mode="w", shape=(5, 16, 16), chunks=(1, 16, 16),
                          dtype="u4")
    src[:] = np.arange(5, dtype=np.uint32)[:, None, None]
    back, _, _ = read_labels(write_labels(tmp_path / "o.tif", src))
    np.testing.assert_array_equal(back, src[:])


def test_provenance_records_model_params_version_and_input(tmp_path):
    class FakeModel:
        name, weights_hash, precision, config = "tiny", "ab" * 32, "fp32", None

    rec = provenance(FakeModel(), {"points": np.array([[1, 2]])}, tmp_path / "in.tif", "blake2b:00")
    assert rec["model"]["name"] == "tiny" and rec["model"]["weights_sha256"] == "ab" * 32
    assert rec["params"] == {"points": [[1, 2]]}
    assert rec["napari_sam_version"] and rec["created"]
    assert rec["input"] == {"path": str((tmp_path / "in.tif").resolve()), "signature": "blake2b:00"}


# -- prompt files --------------------------------------------------------------------------------
def test_napari_points_and_shapes_csv(tmp_path):
    io = pytest.importorskip("napari_builtins.io")
    io.napari_write_points(str(tmp_path / "p.csv"), np.array([[10.0, 20.0], [12.0, 25.0]]),
                           {"properties": {"label": np.array([1, 0])}})
    (obj,) = read_prompts([tmp_path / "p.csv"], ndim=2)
    np.testing.assert_array_equal(obj.points, [[10, 20], [12, 25]])
    np.testing.assert_array_equal(obj.point_labels, [1, 0])
    rect = np.array([[3, 1, 2], [3, 1, 9], [3, 6, 9], [3, 6, 2]], dtype=float)
    io.napari_write_shapes(str(tmp_path / "s.csv"), [rect, rect + [1, 0, 0]],
                           {"shape_type": ["rectangle", "rectangle"]})
    objs = read_prompts([tmp_path / "s.csv"], ndim=3)
    assert [(o.object_id, o.index) for o in objs] == [(1, (3,)), (2, (4,))]
    np.testing.assert_array_equal(objs[0].box, [1, 2, 6, 9])
    io.napari_write_shapes(str(tmp_path / "l.csv"), [rect[:2]], {"shape_type": ["line"]})
    with pytest.raises(PromptFileError, match="line"):
        read_prompts([tmp_path / "l.csv"], ndim=3)


def test_own_csv_and_json_formats_group_objects(tmp_path):
    (tmp_path / "pts.csv").write_text("z,row,col,label,object\n1,5,6,1,3\n1,8,9,0,3\n2,5,5,1,\n")
    (tmp_path / "boxes.csv").write_text("z,min_row,min_col,max_row,max_col,object\n1,2,3,10,12,3\n")
    objs = read_prompts([tmp_path / "pts.csv", tmp_path / "boxes.csv"], ndim=3)
    first = objs[0]
    assert (first.object_id, first.index) == (3, (1,))
    np.testing.assert_array_equal(first.point_labels, [1, 0])
    np.testing.assert_array_equal(first.box, [2, 3, 10, 12])
    assert (objs[1].object_id, objs[1].index) == (4, (2,))  # no object id: a new one
    (tmp_path / "p.json").write_text(json.dumps({
        "points": [{"row": 4, "col": 5, "label": 1}],
        "boxes": [{"min_row": 1, "min_col": 1, "max_row": 9, "max_col": 9}],
    }))
    objs = read_prompts([tmp_path / "p.json"], ndim=2)
    assert len(objs) == 2 and len(objs[0].points) == 1 and objs[1].box is not None


@pytest.mark.parametrize(
    ("text", "ndim", "message"),
    [
        ("x,y\n1,2\n", 2, "columns x,y are not a prompt file"),
        ("row,col,lable\n1,2,1\n", 2, "not a prompt file"),
        ("row,col\n1,abc\n", 2, "'abc' is not a number"),
        ("row,col,label\n1,2,5\n", 2, "label must be 1"),
        ("row,col\n1,2\n", 3, "needs a z column"),
        ("z,row,col\n0,1,2\n", 2, "image is 2D"),
        ("", 2, "empty"),
    ],
)
def test_wrong_prompt_files_give_one_clear_error(tmp_path, text, ndim, message):
    path = tmp_path / "prompts.csv"
    path.write_text(text)
    with pytest.raises(PromptFileError, match=message) as info:
        read_prompts([path], ndim)
    assert "\n" not in str(info.value)


def test_prompts_on_missing_slices_are_rejected(tmp_path):
    (tmp_path / "p.csv").write_text("z,row,col\n7,1,2\n")
    objs = read_prompts([tmp_path / "p.csv"], ndim=3)
    with pytest.raises(PromptFileError, match="z=7 is outside the stack of 4 slices"):
        check_in_stack(objs, (4,))


def test_points_without_object_ids_are_one_object_each(tmp_path):
    """A list of centres (e.g. from a detector) gives one object per positive point; a negative
    point without an object applies to the objects of its slice."""
    (tmp_path / "c.csv").write_text("z,row,col,label\n0,5,5,1\n0,20,20,1\n0,12,12,0\n1,8,8,1\n")
    objs = read_prompts([tmp_path / "c.csv"], ndim=3)
    assert [(o.object_id, o.index, o.point_labels.tolist()) for o in objs] == [
        (1, (0,), [1, 0]), (2, (0,), [1, 0]), (3, (1,), [1])]
    (tmp_path / "n.csv").write_text("z,row,col,label\n0,5,5,1\n2,12,12,0\n")
    with pytest.raises(PromptFileError, match="negative point .* has no object on its slice"):
        read_prompts([tmp_path / "n.csv"], ndim=3)


def test_zarr_dimension_names_give_the_axes(tmp_path):
    arr = zarr.create_array(str(tmp_path / "rgb.zarr"), shape=(16, 12, 3), dtype="u1",
                            dimension_names=["y", "x", "c"])
    arr[:] = 7
    image = open_stack(tmp_path / "rgb.zarr")
    assert image.axes == "YXC" and image.shape == (16, 12, 3)
