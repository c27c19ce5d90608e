"""The disk cache shared between processes: reuse across sessions, concurrent writers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from napari_sam.embeddings import EmbeddingCache

WORKER = str(Path(__file__).with_name("_worker.py"))


def _spawn(stack_file: Path, directory: Path, start: int | None = None) -> subprocess.Popen[str]:
    args = [sys.executable, WORKER, str(stack_file), str(directory)]
    if start is not None:
        args.append(str(start))
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen[str]) -> dict[str, int]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return {k: int(v) for k, v in (item.split("=") for item in out.split())}


def test_second_session_reuses_every_slice(tmp_path, model, encoder) -> None:
    stack = np.random.default_rng(3).integers(0, 255, (5, 40, 50)).astype(np.uint8)
    np.save(tmp_path / "stack.npy", stack)
    EmbeddingCache(model, directory=tmp_path / "cache").view(stack).precompute()
    assert encoder.images == 5
    assert _result(_spawn(tmp_path / "stack.npy", tmp_path / "cache")) == {"encoded": 0, "corrupt": 0}


def test_two_processes_writing_at_once_leave_a_valid_cache(tmp_path, model, encoder) -> None:
    stack = np.random.default_rng(4).integers(0, 255, (8, 40, 50)).astype(np.uint8)
    np.save(tmp_path / "stack.npy", stack)
    procs = [_spawn(tmp_path / "stack.npy", tmp_path / "cache", start) for start in (0, 7)]
    results = [_result(p) for p in procs]
    assert all(r["corrupt"] == 0 for r in results)
    assert sum(r["encoded"] for r in results) >= 8  # every slice computed at least once
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # no temporary file left behind
    cache = EmbeddingCache(model, directory=tmp_path / "cache")
    view = cache.view(stack)
    for z in range(8):
        view.get(z)
    assert encoder.images == 0 and cache.disk is not None and cache.disk.corrupt_found == 0
