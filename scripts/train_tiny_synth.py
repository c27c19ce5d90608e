"""Train the ``tiny-synth`` model shipped with napari-sam, reproducibly, on CPU.

The architecture, training data and settings are in :mod:`napari_sam.training.tiny_synth`;
this script generates the data, trains, logs one line per step and exports the weights.

The shipped model was made in four phases (2 CPU threads; see docs/training.md for times and
results): phase 1 from scratch with ``TRAIN_CONFIG``; phase 2 from phase 1's checkpoint with
``PHASE2_CONFIG``; phases 3 and 4 from the previous phase's exported float16 weights with
``PHASE3_CONFIG`` and ``PHASE4_CONFIG`` (a fresh optimizer and schedule in every phase):

    python scripts/train_tiny_synth.py --checkpoint /tmp/phase1.ckpt
    python scripts/train_tiny_synth.py --phase2 --init-from /tmp/phase1.ckpt \
        --checkpoint /tmp/phase2.ckpt --export /tmp/phase2.pt
    python scripts/train_tiny_synth.py --phase3 --init-from /tmp/phase2.pt \
        --checkpoint /tmp/phase3.ckpt --export /tmp/phase3.pt
    python scripts/train_tiny_synth.py --phase4 --init-from /tmp/phase3.pt \
        --checkpoint /tmp/phase4.ckpt --export src/napari_sam/weights_data/tiny_synth.pt

Other modes:

    python scripts/train_tiny_synth.py --export-from CKPT --export OUT.pt   # export a checkpoint
    python scripts/train_tiny_synth.py --benchmark [MODEL] --images 16      # held-out benchmark
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

# Threads that wait passively: with busy-waiting OpenMP threads a 2-thread run slows down
# tenfold when another process shares the cores. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from napari_sam.model import build_sam  # noqa: E402
from napari_sam.training.tiny_synth import (  # noqa: E402
    DATA_RECIPE,
    PHASE2_CONFIG,
    PHASE3_CONFIG,
    PHASE4_CONFIG,
    TINY_SYNTH_CONFIG,
    TRAIN_CONFIG,
    build_training_pool,
)
from napari_sam.training.trainer import export_weights, train  # noqa: E402

#: ``--phaseN`` -> the settings of that phase (phase 1, from scratch, is ``TRAIN_CONFIG``).
LATER_PHASES = {2: PHASE2_CONFIG, 3: PHASE3_CONFIG, 4: PHASE4_CONFIG}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    phase = parser.add_mutually_exclusive_group()
    for n in LATER_PHASES:
        phase.add_argument(f"--phase{n}", action="store_true", help=f"use PHASE{n}_CONFIG (with --init-from)")
    parser.add_argument("--init-from", type=Path, help="start from these weights (not a resume)")
    parser.add_argument("--steps", type=int, help="total steps (default: the config's)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the config's)")
    parser.add_argument("--seed", type=int, help="data/prompt seed (default: the config's)")
    parser.add_argument("--checkpoint", type=Path, help="training checkpoint to write")
    parser.add_argument("--resume", type=Path, help="continue from this training checkpoint")
    parser.add_argument("--export", type=Path, help="write fp16 inference weights + .sha256 here")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--export-from", type=Path, help="only export this training checkpoint (with --export)")
    parser.add_argument("--benchmark", nargs="?", const="tiny-synth", metavar="MODEL",
                        help="only evaluate MODEL (default the shipped tiny-synth) and the baseline")
    parser.add_argument("--images", type=int, default=16, help="held-out images for --benchmark")
    parser.add_argument("--stacks", type=int, default=4, help="held-out 3D stacks for --benchmark")
    parser.add_argument("--out", type=Path, help="with --benchmark: also write the results as Markdown here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.benchmark is not None:
        from napari_sam.training.evaluate import format_table
        from napari_sam.training.tiny_synth import benchmark

        t0 = time.perf_counter()
        ours, base = benchmark(args.benchmark, n_images=args.images, n_stacks=args.stacks)
        table = format_table([ours, base])
        print(table)
        print(f"# {args.images} held-out images, {args.stacks} stacks, {time.perf_counter() - t0:.0f} s", flush=True)
        if args.out is not None:
            args.out.write_text(benchmark_markdown(args, ours, base, table), encoding="utf-8")
            print(f"# wrote {args.out}")
        return 0
    if args.export_from is not None:
        if args.export is None:
            parser.error("--export-from needs --export")
        from napari_sam.weights import load_model

        digest = export_weights(load_model(args.export_from, precision="fp32"), args.export)
        print(f"# exported {args.export} ({args.export.stat().st_size / 1e6:.2f} MB, sha256 {digest})")
        return 0
    if args.checkpoint is None:
        parser.error("--checkpoint is required for training")
    base = next((cfg for n, cfg in LATER_PHASES.items() if getattr(args, f"phase{n}")), TRAIN_CONFIG)
    overrides = {k: v for k, v in (("steps", args.steps), ("lr", args.lr), ("seed", args.seed)) if v is not None}
    config = dataclasses.replace(base, **overrides)
    torch.manual_seed(config.seed)
    print(json.dumps({"model_config": TINY_SYNTH_CONFIG.to_dict(), "train_config": config.to_dict(),
                      "data": [{"name": p.name, "n": p.n, "seed": p.seed, "params": dataclasses.asdict(p.params)}
                               for p in DATA_RECIPE], "resume": str(args.resume),
                      "init_from": str(args.init_from)}), flush=True)
    t0 = time.perf_counter()
    planes = build_training_pool()
    print(f"# {len(planes)} training planes generated in {time.perf_counter() - t0:.1f} s", flush=True)

    def log(record: dict[str, float]) -> None:
        print(json.dumps({k: round(v, 5) for k, v in record.items()}), flush=True)

    if args.init_from is not None:
        from napari_sam.weights import load_model

        model = load_model(args.init_from, precision="fp32")
    else:
        model = build_sam(TINY_SYNTH_CONFIG)
    t1 = time.perf_counter()
    result = train(model, planes, args.checkpoint, config=config, resume=args.resume, log=log)
    print(f"# trained to step {result.steps} in {time.perf_counter() - t1:.0f} s", flush=True)
    if args.export is not None:
        digest = export_weights(result.model, args.export)
        size = args.export.stat().st_size
        print(f"# exported {args.export} ({size / 1e6:.2f} MB, sha256 {digest})", flush=True)
    return 0


TARGETS = {"1_click": 0.80, "box": 0.85, "5_clicks": 0.88}


def benchmark_markdown(args: argparse.Namespace, ours: object, base: object, table: str) -> str:
    """docs/benchmarks_training.md: the held-out table and the targets, met or not."""
    import datetime
    import platform

    from napari_sam.training.tiny_synth import HELDOUT_SEED

    s, b = ours.summary(), base.summary()  # type: ignore[attr-defined]
    rows = [
        f"| {k.replace('_', ' ')} | {s[k]:.3f} | {b[k]:.3f} | >= {v:.2f} | {'yes' if s[k] >= v else '**no**'} | "
        f"{'yes' if s[k] > b[k] else '**no**'} |"
        for k, v in TARGETS.items()
    ]
    return "\n".join([
        "## Training: tiny-synth on held-out synthetic data (scripts/train_tiny_synth.py --benchmark)",
        "",
        f"Run {datetime.datetime.now():%Y-%m-%d %H:%M} with `python scripts/train_tiny_synth.py --benchmark "
        f"{args.benchmark} --images {args.images} --stacks {args.stacks}` ({platform.machine()}, torch "
        f"{torch.__version__}, {args.threads} thread{'s' if args.threads != 1 else ''}). Held-out data: `HELDOUT_PRESET` (radius 4-18 px "
        "against 6-12 in training, more elongated, dimmer, noisier, blurrier, more uneven illumination), "
        f"256 x 256 images and (16, 256, 256) stacks, dataset seeds {HELDOUT_SEED} and {HELDOUT_SEED + 1} "
        "(training uses 1001-1007). Protocol (`napari_sam.training.evaluate`): first click at the "
        "object's interior point farthest from its boundary, each next click at the centre of the "
        "largest error region (positive for a miss, negative for a false positive), previous logits "
        "fed back; box = the object's tight bounding box; 3D Dice = one click on the object's largest "
        "slice, then propagation through z with the default stop criteria. Baseline: seeded watershed "
        "from the same clicks (`napari_sam.training.baseline.SeededWatershed`).",
        "",
        table,
        "",
        "| measure | tiny-synth | baseline | target | met | beats baseline |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
