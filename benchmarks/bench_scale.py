"""Benchmark of the scale-out (napari_sam.distributed): throughput and memory of headless runs.

Measures, on a synthetic stack written as zarr:
  * ``embed`` throughput (slices/s) with the local thread scheduler and with a local
    ``dask.distributed`` cluster of 1 and of 2 worker processes (1 thread each);
  * ``auto`` (segment everything + linking) throughput, the same three ways;
  * peak memory of an ``embed`` and an ``auto`` run on a zarr volume several times larger than the
    memory budget given to the run, each in a fresh process (resident set sampled every 20 ms).

The cluster is started before timing; the time of a run includes each worker loading the model.

usage: python benchmarks/bench_scale.py [--model tiny-synth|PATH|random] [--slices 12] [--size 512]
       [--volume-slices 64] [--volume-size 2048] [--budget "64 MB"] [--out docs/benchmarks_scale.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the napari-sam command line does

AUTO = {"points_per_side": 16}


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"


def model_file(name: str, tmp: Path) -> str:
    """A registry name or path as given; "random": the tiny-synth architecture, random weights."""
    if name != "random":
        return name
    import torch

    from napari_sam.model import build_sam
    from napari_sam.training.tiny_synth import TINY_SYNTH_CONFIG

    torch.manual_seed(0)
    path = tmp / "random_tiny_synth_arch.pt"
    torch.save({"model": build_sam(TINY_SYNTH_CONFIG).state_dict(), "config": TINY_SYNTH_CONFIG.to_dict()}, path)
    return str(path)


def write_stack(path: Path, slices: int, size: int) -> None:
    import zarr

    from napari_sam.training.synthetic import TRAIN_PRESET, make_stack_3d

    stack, _ = make_stack_3d(replace(TRAIN_PRESET, shape=(slices, size, size)), 0)
    arr = zarr.open_array(str(path), mode="w", shape=stack.shape, chunks=(1, size, size), dtype=stack.dtype)
    arr[:] = stack


def write_volume(path: Path, slices: int, size: int) -> int:
    """A (slices, size, size) uint16 zarr volume of tiled synthetic planes plus noise; its bytes."""
    import zarr

    from napari_sam.training.synthetic import TRAIN_PRESET, make_stack_3d

    base, _ = make_stack_3d(replace(TRAIN_PRESET, shape=(8, 512, 512)), 1)
    reps = -(-size // 512)
    arr = zarr.open_array(str(path), mode="w", shape=(slices, size, size), chunks=(1, size, size), dtype="uint16")
    rng = np.random.default_rng(0)
    for z in range(slices):
        plane = np.tile(base[z % 8], (reps, reps))[:size, :size].astype(np.int32)
        arr[z] = np.clip(plane + rng.integers(-20, 20, plane.shape), 0, 65535).astype(np.uint16)
    return slices * size * size * 2


def timed(job: str, stack: Path, model: str, scheduler, tmp: Path, tag: str) -> float:
    from napari_sam.distributed import embed_stack, segment_everything_stack

    start = time.perf_counter()
    if job == "embed":
        embed_stack(stack, model, cache_dir=tmp / f"cache_{tag}", scheduler=scheduler, workers=1)
    else:
        segment_everything_stack(stack, tmp / f"labels_{tag}.zarr", model, params=AUTO, scheduler=scheduler,
                                 workers=1)
    return time.perf_counter() - start


def throughput(args: argparse.Namespace, model: str, tmp: Path) -> list[tuple[str, str, float, float]]:
    from distributed import Client, LocalCluster

    stack = tmp / "stack.zarr"
    write_stack(stack, args.slices, args.size)
    rows = []
    for job in ("embed", "auto"):
        seconds = timed(job, stack, model, None, tmp, f"{job}_threads")
        rows.append((job, "threads (this process, torch on all cores)", seconds, args.slices / seconds))
    for n in (1, 2):
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster, Client(cluster) as client:
            for job in ("embed", "auto"):
                seconds = timed(job, stack, model, client, tmp, f"{job}_{n}")
                rows.append((job, f"{n} worker process{'es' if n > 1 else ''} x 1 thread", seconds,
                             args.slices / seconds))
    return rows


def child(args: argparse.Namespace) -> None:
    """In a fresh process: run one job on the volume, print baseline and peak RSS as JSON."""
    import psutil

    from napari_sam.distributed import embed_stack, segment_everything_stack
    from napari_sam.weights import load_model

    proc = psutil.Process()
    load_model(args.model)  # imports and weights counted in the baseline
    baseline = proc.memory_info().rss
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], proc.memory_info().rss)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    start = time.perf_counter()
    if args.child == "embed":
        embed_stack(args.volume, args.model, cache_dir=Path(args.tmp) / "vol_cache", memory_budget=args.budget)
    else:
        segment_everything_stack(args.volume, Path(args.tmp) / "vol_labels.zarr", args.model, params=AUTO,
                                 memory_budget=args.budget)
    seconds = time.perf_counter() - start
    stop.set()
    watcher.join()
    print(json.dumps({"baseline": baseline, "peak": max(peak[0], proc.memory_info().rss), "seconds": seconds}))


def memory(args: argparse.Namespace, model: str, tmp: Path) -> tuple[int, list[tuple[str, dict]]]:
    volume = tmp / "volume.zarr"
    nbytes = write_volume(volume, args.volume_slices, args.volume_size)
    results = []
    for job in ("embed", "auto"):
        cmd = [sys.executable, __file__, "--child", job, "--model", model, "--volume", str(volume),
               "--tmp", str(tmp), "--budget", args.budget]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append((job, json.loads(done.stdout.strip().splitlines()[-1])))
    return nbytes, results


def report(args: argparse.Namespace, rows, nbytes: int, mem) -> str:
    mb = 1e6
    lines = [
        f"## Scale-out benchmark ({datetime.date.today().isoformat()})",
        "",
        f"Machine: {machine()}. Model: `{args.model}`. Measured with `python benchmarks/bench_scale.py "
        f"{' '.join(sys.argv[1:])}`; the machine's cores were shared with other work, so expect noise.",
        "",
        f"### Throughput: {args.slices} slices of {args.size} x {args.size} (synthetic, zarr)",
        "",
        f"`auto` uses {AUTO} (other settings default). Times include each worker loading the model.",
        "",
        "| job | scheduler | seconds | slices/s |",
        "|---|---|---|---|",
    ]
    lines += [f"| {job} | {how} | {sec:.1f} | {rate:.2f} |" for job, how, sec, rate in rows]
    lines += [
        "",
        f"### Memory: a {args.volume_slices} x {args.volume_size} x {args.volume_size} uint16 zarr volume "
        f"({nbytes / mb:.0f} MB) with memory budget {args.budget}",
        "",
        "Each run in a fresh process (thread scheduler); baseline = resident memory after imports and "
        "loading the model; peak sampled every 20 ms.",
        "",
        "| job | volume | baseline RSS | peak RSS | peak - baseline | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for job, r in mem:
        lines.append(f"| {job} | {nbytes / mb:.0f} MB | {r['baseline'] / mb:.0f} MB | {r['peak'] / mb:.0f} MB | "
                     f"{(r['peak'] - r['baseline']) / mb:.0f} MB | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-synth", help="registry name, checkpoint, or 'random'")
    parser.add_argument("--slices", type=int, default=12)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--volume-slices", type=int, default=64)
    parser.add_argument("--volume-size", type=int, default=2048)
    parser.add_argument("--budget", default="64 MB")
    parser.add_argument("--out", default="docs/benchmarks_scale.md")
    parser.add_argument("--child", choices=("embed", "auto"), help=argparse.SUPPRESS)
    parser.add_argument("--volume", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as name:
        tmp = Path(name)
        os.environ.setdefault("NAPARI_SAM_CACHE_DIR", str(tmp / "cache"))
        model = model_file(args.model, tmp)
        rows = throughput(args, model, tmp)
        nbytes, mem = memory(args, model, tmp)
    text = report(args, rows, nbytes, mem)
    print(text)
    Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
