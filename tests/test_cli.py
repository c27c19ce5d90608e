"""The napari-sam command line: every subcommand on small synthetic files, and user mistakes."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_sam.cli import main
from napari_sam.io import read_labels
from napari_sam.model import SamConfig, build_sam

EVERYTHING_ARGS = ["--points-per-side", "4", "--pred-iou-thresh", "-10", "--stability-score-thresh", "0",
                   "--min-area", "0", "--box-nms-thresh", "1", "--max-area-fraction", "1"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    config = SamConfig(img_size=256, embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,),
                       window_size=4, prompt_embed_dim=64, decoder_mlp_dim=128, iou_head_hidden_dim=64)
    path = tmp_path_factory.mktemp("model") / "tiny_random.pt"
    torch.save({"model": build_sam(config).state_dict(), "config": config.to_dict()}, path)
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from napari_sam.training.synthetic import TRAIN_PRESET, make_image_2d, make_stack_3d

    root = tmp_path_factory.mktemp("data")
    image, labels = make_image_2d(dataclasses.replace(TRAIN_PRESET, shape=(96, 96)), 1)
    tifffile.imwrite(root / "cells.tif", image)
    stack, _ = make_stack_3d(dataclasses.replace(TRAIN_PRESET, shape=(4, 64, 64)), 2)
    tifffile.imwrite(root / "stack.tif", stack, photometric="minisblack")
    return root


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code, err, expected_code, message):
    assert code == expected_code
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-sam: error: ") and message in lines[0], lines[0]
    assert "Traceback" not in err


# -- help and models ---------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["", "segment", "auto", "embed", "models", "train", "eval", "demo"])
def test_help_reads_well(capsys, command):
    code, out, _ = run(capsys, *([command] if command else []), "--help")
    assert code == 0 and "usage: napari-sam" in out
    if command in ("segment", "auto", "embed", "models"):
        assert "examples:" in out and f"napari-sam {command}" in out


def test_models_lists_registry_with_cache_state(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["name", "arch", "size", "cached"]
    by_name = {r.split()[0]: r.split() for r in rows if r.strip() and not r.startswith("cache:")}
    assert by_name["vit_b"][1:5] == ["vit_b", "375.0", "MB", "no"]
    assert "tiny-synth" in by_name


def test_models_verify(capsys, model_path):
    code, out, _ = run(capsys, "models", "--verify", model_path)
    assert code == 0 and "loads as a SAM model, image size 256" in out
    code, _, err = run(capsys, "models", "--verify", "vit_h")
    assert_one_error_line(code, err, 1, "napari-sam models --download vit_h")
    code, _, err = run(capsys, "models", "--download", "no_such_model")
    assert_one_error_line(code, err, 1, "unknown model 'no_such_model'")


# -- segment ------------------------------------------------------------------------------------
def test_segment_2d_from_points_and_box(capsys, tmp_path, data, model_path):
    out = tmp_path / "mask.tif"
    code, stdout, _ = run(capsys, "segment", data / "cells.tif", "--point", 40, 50, "--negative", 10, 10,
                          "--box", 20, 30, 60, 70, "--model", model_path, "--out", out, "-q")
    assert code == 0 and "wrote" in stdout
    labels, _, record = read_labels(out)
    assert labels.shape == (96, 96) and set(np.unique(labels)) <= {0, 1}
    obj = record["params"]["objects"][0]
    assert obj["points"] == [[40, 50], [10, 10]] and obj["point_labels"] == [1, 0]
    assert obj["box"] == [20, 30, 60, 70]
    assert record["model"]["name"] == "tiny_random" and len(record["model"]["weights_sha256"]) == 64
    assert (tmp_path / "mask.json").is_file()


def test_segment_stack_from_napari_points_and_propagate(capsys, tmp_path, data, model_path):
    (tmp_path / "points.csv").write_text("index,axis-0,axis-1,axis-2\n0,1,30,30\n1,2,10,50\n")
    code, _, _ = run(capsys, "segment", data / "stack.tif", "--prompts", tmp_path / "points.csv",
                     "--model", model_path, "--out", tmp_path / "labels.zarr", "-q")
    assert code == 0
    labels = read_labels(tmp_path / "labels.zarr")[0][:]
    assert labels.shape == (4, 64, 64)
    assert set(np.unique(labels[1])) <= {0, 1} and set(np.unique(labels[2])) <= {0, 2}
    assert not labels[0].any() and not labels[3].any()  # only the prompted slices
    code, _, _ = run(capsys, "segment", data / "stack.tif", "--z", 1, "--point", 30, 30, "--propagate",
                     "--model", model_path, "--out", tmp_path / "vol.tif", "-q")
    assert code == 0
    assert set(np.unique(read_labels(tmp_path / "vol.tif")[0])) <= {0, 1}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["missing.tif", "--point", "1", "1"], 1, "does not exist"),
        (["{cells}", "--point", "500", "10"], 1, "outside the image"),
        (["{cells}"], 2, "no prompts"),
        (["{cells}", "--point", "1"], 2, "expected 2 arguments"),
        (["{cells}", "--prompts", "{bad_csv}"], 1, "are not a prompt file"),
        (["{stack}", "--point", "5", "5"], 2, "--z"),
        (["{stack}", "--prompts", "{far_csv}"], 1, "outside the stack"),
        (["{four_d}", "--point", "5", "5"], 1, "2D (Y, X) or 3D"),
        (["{empty}", "--point", "5", "5"], 1, "empty"),
        (["{cells}", "--point", "5", "5", "--model", "nope.pt"], 1, "nope.pt does not exist"),
    ],
)
def test_segment_user_mistakes_give_one_line(capsys, tmp_path, data, model_path, args, code, message):
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
    (tmp_path / "far.csv").write_text("z,row,col\n9,5,5\n")
    np.save(tmp_path / "four_d.npy", np.ones((2, 3, 16, 16), np.uint8))
    np.save(tmp_path / "empty.npy", np.ones((0, 16, 16), np.uint8))
    names = {"cells": data / "cells.tif", "stack": data / "stack.tif", "bad_csv": tmp_path / "bad.csv",
             "far_csv": tmp_path / "far.csv", "four_d": tmp_path / "four_d.npy",
             "empty": tmp_path / "empty.npy"}
    argv = [a.format(**names) for a in args]
    if "--model" not in argv:
        argv += ["--model", model_path]
    got, _, err = run(capsys, "segment", *argv, "--out", tmp_path / "o.tif", "-q")
    assert_one_error_line(got, err, code, message)
    assert not (tmp_path / "o.tif").exists()


def test_existing_output_is_kept_without_overwrite(capsys, tmp_path, data, model_path):
    out = tmp_path / "o.tif"
    out.write_bytes(b"precious")
    args = ["segment", data / "cells.tif", "--point", 40, 40, "--model", model_path, "--out", out, "-q"]
    code, _, err = run(capsys, *args)
    assert_one_error_line(code, err, 1, "exists; choose another name or pass --overwrite")
    assert out.read_bytes() == b"precious"
    code, _, _ = run(capsys, *args, "--overwrite")
    assert code == 0 and read_labels(out)[0].shape == (96, 96)


# -- embed and auto -----------------------------------------------------------------------------
def test_embed_then_resume(capsys, tmp_path, data, model_path):
    args = ["embed", data / "stack.tif", "--model", model_path, "--cache-dir", tmp_path / "emb", "-q"]
    code, out, _ = run(capsys, *args)
    assert code == 0 and "4 slice(s): 4 computed, 0 already cached" in out
    code, out, _ = run(capsys, *args, "--export", tmp_path / "e.zarr")
    assert code == 0 and "0 computed, 4 already cached" in out and (tmp_path / "e.zarr").is_dir()


def test_auto_on_a_folder(capsys, tmp_path, data, model_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(data / "cells.tif", folder / "a.tif")
    shutil.copy(data / "stack.tif", folder / "b.tif")
    code, out, err = run(capsys, "auto", folder, "--out", tmp_path / "out", "--model", model_path,
                         *EVERYTHING_ARGS)
    assert code == 0, err
    assert "auto a.tif [" in err and "auto b.tif [" in err  # progress bars on stderr
    a, _, rec = read_labels(tmp_path / "out" / "a_labels.tif")
    b = read_labels(tmp_path / "out" / "b_labels.tif")[0]
    assert a.shape == (96, 96) and b.shape == (4, 64, 64) and a.max() > 0
    assert rec["params"]["segment_everything"]["points_per_side"] == 4
    code, _, err = run(capsys, "auto", folder, "--out", tmp_path / "out", "--model", model_path, "-q")
    assert_one_error_line(code, err, 1, "a_labels.tif exists")


def test_auto_bad_scheduler_and_workers(capsys, tmp_path, data, model_path):
    base = ["auto", data / "stack.tif", "--out", tmp_path / "l.tif", "--model", model_path, "-q"]
    code, _, err = run(capsys, *base, "--workers", 0)
    assert_one_error_line(code, err, 2, "--workers must be 1 or more")
    code, _, err = run(capsys, *base, "--scheduler", "somewhere")
    assert_one_error_line(code, err, 1, "scheduler 'somewhere'")


# -- the installed script -----------------------------------------------------------------------
def test_installed_script_end_to_end(tmp_path, data, model_path):
    script = Path(sys.executable).with_name("napari-sam")
    exe = [str(script)] if script.exists() else [sys.executable, "-m", "napari_sam.cli"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = tmp_path / "mask.tif"
    done = subprocess.run([*exe, "segment", str(data / "cells.tif"), "--point", "40", "50", "--model",
                           model_path, "--out", str(out)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "segment [" in done.stderr and out.is_file()
    again = subprocess.run([*exe, "segment", str(data / "cells.tif"), "--point", "40", "50", "--model",
                            model_path, "--out", str(out)], capture_output=True, text=True, env=env,
                           timeout=120)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [
        f"napari-sam: error: {out} exists; choose another name or pass --overwrite"
    ]
    assert json.loads((tmp_path / "mask.json").read_text())["napari_sam"]["record"]["params"]["command"] == "segment"


# -- train, eval, demo --------------------------------------------------------------------------
def test_train_then_evaluate(capsys, tmp_path, model_path):
    out = tmp_path / "fine.pt"
    code, stdout, err = run(capsys, "train", "--synthetic", 1, "--steps", 1, "--model", model_path,
                            "--out", out, "-q")
    assert code == 0, err
    assert "trained 1 step(s)" in stdout and out.is_file()
    code, stdout, _ = run(capsys, "eval", "--synthetic", 1, "--max-objects", 2, "--model", out, "--baseline", "-q")
    assert code == 0
    table = [line for line in stdout.splitlines() if line.startswith("|")]
    assert table[0].startswith("| method | images | objects | 1 click") and len(table) == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--synthetic", "1", "--images", "x"], "not both"),
        ([], "give --images and --labels"),
        (["--images", "{a}", "--labels", "{two}"], "1 image(s) but 2 label file(s)"),
    ],
)
def test_train_data_mistakes(capsys, tmp_path, data, model_path, extra, message):
    two = tmp_path / "two"
    two.mkdir()
    for name in ("l1.tif", "l2.tif"):
        shutil.copy(data / "cells.tif", two / name)
    argv = [e.format(a=data / "cells.tif", two=two) for e in extra]
    code, _, err = run(capsys, "train", *argv, "--model", model_path, "--out", tmp_path / "m.pt", "-q")
    assert_one_error_line(code, err, 2, message)


def test_demo_writes_its_files_and_protects_them(capsys, tmp_path, model_path):
    out = tmp_path / "demo"
    code, stdout, _ = run(capsys, "demo", "--out", out, "--model", model_path, "-q")
    assert code == 0 and "segmented" in stdout and "napari-sam segment" in stdout
    assert {p.name for p in out.iterdir()} >= {"image.tif", "labels.tif", "points.csv", "overlay.png"}
    code, _, err = run(capsys, "demo", "--out", out, "--model", model_path, "-q")
    assert_one_error_line(code, err, 1, "not empty")
