"""napari_sam.distributed: per-slice Dask runs, local vs a 2-process cluster, resume, streaming."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_sam.distributed import RunCancelled, embed_stack, segment_everything_stack
from napari_sam.io import image_signature, read_labels
from napari_sam.model import SamConfig, build_sam

# a random small model gives few confident masks: these settings keep every candidate, so
# slices hold several objects of varied size and linking has something to do
EVERYTHING = {"points_per_side": 4, "pred_iou_thresh": -10.0, "stability_score_thresh": 0.0,
              "box_nms_thresh": 1.0, "max_area_fraction": 1.0, "min_mask_region_area": 0}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    config = SamConfig(img_size=256, embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,),
                       window_size=4, prompt_embed_dim=64, decoder_mlp_dim=128, iou_head_hidden_dim=64)
    path = tmp_path_factory.mktemp("model") / "tiny_random.pt"
    torch.save({"model": build_sam(config).state_dict(), "config": config.to_dict()}, path)
    return path


@pytest.fixture(scope="module")
def stack_zarr(tmp_path_factory):
    from napari_sam.training.synthetic import TRAIN_PRESET, make_stack_3d

    image, _ = make_stack_3d(dataclasses.replace(TRAIN_PRESET, shape=(5, 64, 64)), 3)
    path = tmp_path_factory.mktemp("data") / "stack.zarr"
    arr = zarr.open_array(str(path), mode="w", shape=image.shape, chunks=(1, 64, 64), dtype=image.dtype)
    arr[:] = image
    return path


def _counting(progress_log):
    def progress(done, total):
        progress_log.append((done, total))
    return progress


def test_local_run_equals_the_segmenter_on_the_whole_stack(tmp_path, model_path, stack_zarr):
    from napari_sam import Segmenter, load_model

    log = []
    run = segment_everything_stack(stack_zarr, tmp_path / "labels.tif", model_path, params=EVERYTHING,
                                   precision="fp32", progress=_counting(log))
    labels, _, record = read_labels(run.path)
    model = load_model(model_path, precision="fp32")
    expected = Segmenter(model, zarr.open_array(str(stack_zarr), mode="r")).segment_everything(**EVERYTHING)
    np.testing.assert_array_equal(labels, expected)
    assert run.objects == len(np.unique(expected)) - 1 > 5
    assert (run.planes, run.computed, run.reused) == (5, 5, 0)
    assert log[0] == (0, 5) and log[-1] == (5, 5)
    # the record identifies the model, the parameters and the exact input
    assert record["model"]["weights_sha256"] == model.weights_hash
    assert record["params"]["segment_everything"] == EVERYTHING
    assert record["input"]["signature"] == image_signature(zarr.open_array(str(stack_zarr), mode="r"))
    assert not (tmp_path / "labels.tif.partial").exists()  # work files are cleaned up


def test_two_process_cluster_gives_the_same_labels_and_embeddings(tmp_path, model_path, stack_zarr):
    distributed = pytest.importorskip("distributed")
    local = segment_everything_stack(stack_zarr, tmp_path / "local.zarr", model_path, params=EVERYTHING,
                                     precision="fp32")
    local_emb = embed_stack(stack_zarr, model_path, cache_dir=tmp_path / "emb_local", precision="fp32")
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        remote = segment_everything_stack(stack_zarr, tmp_path / "remote.zarr", model_path,
                                          params=EVERYTHING, precision="fp32", scheduler=client)
        remote_emb = embed_stack(stack_zarr, model_path, cache_dir=tmp_path / "emb_remote",
                                 precision="fp32", scheduler=client)
        loaded = client.run(lambda: len(__import__("napari_sam.distributed.worker", fromlist=["x"])._MODELS))
    assert len(loaded) == 2 and all(n == 1 for n in loaded.values())  # each worker loaded the model once
    np.testing.assert_array_equal(read_labels(remote.path)[0][:], read_labels(local.path)[0][:])
    assert remote.signature == local.signature
    assert remote_emb.computed == local_emb.computed == 5
    files_local = sorted(p.relative_to(local_emb.path) for p in local_emb.path.rglob("*.emb"))
    files_remote = sorted(p.relative_to(remote_emb.path) for p in remote_emb.path.rglob("*.emb"))
    assert files_local == files_remote and len(files_local) == 5  # same signatures
    for rel in files_local:
        assert (local_emb.path / rel).read_bytes() == (remote_emb.path / rel).read_bytes()


def test_interrupted_segmentation_resumes_with_only_the_rest(tmp_path, model_path, stack_zarr):
    log: list[tuple[int, int]] = []
    out = tmp_path / "labels.zarr"
    with pytest.raises(RunCancelled):
        segment_everything_stack(stack_zarr, out, model_path, params=EVERYTHING, precision="fp32",
                                 progress=_counting(log), cancel=lambda: len(log) > 2)
    assert not out.exists() and (tmp_path / "labels.zarr.partial").is_dir()
    done_before = len(list((tmp_path / "labels.zarr.partial" / "done").iterdir()))
    assert done_before == 2
    run = segment_everything_stack(stack_zarr, out, model_path, params=EVERYTHING, precision="fp32")
    assert (run.computed, run.reused) == (3, 2)
    fresh = segment_everything_stack(stack_zarr, tmp_path / "fresh.zarr", model_path, params=EVERYTHING,
                                     precision="fp32")
    np.testing.assert_array_equal(read_labels(out)[0][:], read_labels(fresh.path)[0][:])


def test_a_changed_setting_does_not_resume_silently(tmp_path, model_path, stack_zarr):
    log: list[tuple[int, int]] = []
    out = tmp_path / "labels.zarr"
    with pytest.raises(RunCancelled):
        segment_everything_stack(stack_zarr, out, model_path, params=EVERYTHING, precision="fp32",
                                 progress=_counting(log), cancel=lambda: len(log) > 1)
    other = {**EVERYTHING, "points_per_side": 3}
    with pytest.raises(FileExistsError, match="unfinished run with other settings"):
        segment_everything_stack(stack_zarr, out, model_path, params=other, precision="fp32")
    run = segment_everything_stack(stack_zarr, out, model_path, params=other, precision="fp32",
                                   overwrite=True)
    assert run.reused == 0


def test_interrupted_embedding_resumes_from_the_cache(tmp_path, model_path, stack_zarr):
    log: list[tuple[int, int]] = []
    cache = tmp_path / "emb"
    with pytest.raises(RunCancelled):
        embed_stack(stack_zarr, model_path, cache_dir=cache, precision="fp32",
                    progress=_counting(log), cancel=lambda: len(log) > 3)
    assert len(list(cache.rglob("*.emb"))) == 3
    import napari_sam.distributed.worker as dist

    dist._WORKER.clear()  # as in a new process: only the files on disk are left
    run = embed_stack(stack_zarr, model_path, cache_dir=cache, precision="fp32")
    assert (run.computed, run.reused) == (2, 3)
    export = embed_stack(stack_zarr, model_path, cache_dir=cache, precision="fp32",
                         export=tmp_path / "emb.zarr")
    assert export.computed == 0 and export.path == tmp_path / "emb.zarr" and export.path.is_dir()


def test_a_2d_image_and_unlinked_ids(tmp_path, model_path, stack_zarr):
    plane = np.asarray(zarr.open_array(str(stack_zarr), mode="r")[2])
    tifffile.imwrite(tmp_path / "plane.tif", plane)
    run = segment_everything_stack(tmp_path / "plane.tif", tmp_path / "p.tif", model_path,
                                   params=EVERYTHING, precision="fp32")
    labels = read_labels(run.path)[0]
    assert labels.shape == plane.shape and run.objects == len(np.unique(labels)) - 1 > 0
    linked = segment_everything_stack(stack_zarr, tmp_path / "l.zarr", model_path, params=EVERYTHING,
                                      precision="fp32")
    unlinked = segment_everything_stack(stack_zarr, tmp_path / "u.zarr", model_path, params=EVERYTHING,
                                        precision="fp32", link=False)
    lu = read_labels(unlinked.path)[0][:]
    per_slice = [set(np.unique(s[s > 0])) for s in lu]
    assert all(a.isdisjoint(b) for i, a in enumerate(per_slice) for b in per_slice[i + 1:])
    assert unlinked.objects > linked.objects  # linking joined objects across slices


def test_the_input_is_read_one_plane_at_a_time(tmp_path, model_path, stack_zarr, monkeypatch):
    """No task reads more than one plane of the input: a volume larger than memory flows through."""
    import napari_sam.distributed.worker as dist

    original = dist.open_stack
    largest: list[int] = []

    class Watched:
        def __init__(self, data):
            self._data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim

        def __getitem__(self, key):
            out = np.asarray(self._data[key])
            largest.append(out.size)
            return out

    def watched_open(*args, **kwargs):
        image = original(*args, **kwargs)
        return dataclasses.replace(image, data=Watched(image.data))

    monkeypatch.setattr(dist, "open_stack", watched_open)
    dist._WORKER.clear()
    segment_everything_stack(stack_zarr, tmp_path / "o.zarr", model_path, params=EVERYTHING,
                             precision="fp32")
    dist._WORKER.clear()
    assert largest and max(largest) <= 64 * 64
