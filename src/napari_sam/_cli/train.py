"""``napari-sam train`` / ``eval`` / ``demo``: the training package from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam._cli.common import Progress, UsageError, add_model_options, load_cli_model

TRAIN_DESCRIPTION = """\
Fine-tune a SAM model on your annotated images (SAM's interactive recipe: point, box and mask
prompts with simulated correction clicks). Images and labels are paired in sorted order; labels
are instance IDs (0 = background); 3D stacks are used slice by slice. --synthetic N trains on N
generated microscopy images instead (no data needed). The checkpoint holds the training state, so
--resume continues an interrupted run.

examples:
  napari-sam train --images imgs/ --labels masks/ --model vit_b --steps 2000 --out my_vit_b.pt
  napari-sam train --synthetic 20 --steps 50 --out tiny_more.pt
  napari-sam train --images imgs/ --labels masks/ --resume my_vit_b.pt --steps 4000 --out my_vit_b.pt
"""
EVAL_DESCRIPTION = """\
Evaluate a model with the interactive protocol: per object, a click at its interior point, then
clicks at the centre of the largest error (mIoU after 1, 3 and 5 clicks), a box prompt, and for
stacks a click on the largest slice followed through z (Dice). Prints a Markdown table.

examples:
  napari-sam eval --images imgs/ --labels masks/ --model vit_b_lm
  napari-sam eval --synthetic 10 --model my_model.pt --baseline
"""
DEMO_DESCRIPTION = """\
A demonstration on generated microscopy data, offline: writes a synthetic nuclei image to OUT,
segments every nucleus from one simulated click, writes the labels, an overlay PNG and the
clicks as a prompt file, and prints the commands that do the same on your data.

examples:
  napari-sam demo --out demo/
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    t = sub.add_parser("train", help="fine-tune a model on annotated images",
                       description=TRAIN_DESCRIPTION, formatter_class=fmt)
    _data_options(t)
    t.add_argument("--out", "-o", required=True, help="checkpoint to write (.pt)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    t.add_argument("--steps", type=int, default=1000, help="training steps (default 1000)")
    t.add_argument("--lr", type=float, default=1e-4, help="learning rate (default 1e-4)")
    t.add_argument("--freeze-encoder", action="store_true", help="train only prompt encoder and decoder")
    t.add_argument("--resume", default=None, metavar="CHECKPOINT", help="continue this training run")
    t.add_argument("--seed", type=int, default=0)
    add_model_options(t)
    t.set_defaults(func=run_train)

    e = sub.add_parser("eval", help="evaluate a model with the interactive protocol",
                       description=EVAL_DESCRIPTION, formatter_class=fmt)
    _data_options(e)
    e.add_argument("--baseline", action="store_true", help="also evaluate the classical baseline")
    e.add_argument("--max-objects", type=int, default=None, help="objects per image (default all)")
    e.add_argument("--seed", type=int, default=0)
    add_model_options(e)
    e.set_defaults(func=run_eval)

    d = sub.add_parser("demo", help="an offline demonstration on synthetic data",
                       description=DEMO_DESCRIPTION, formatter_class=fmt)
    d.add_argument("--out", "-o", default="napari-sam-demo", help="folder for the demo files")
    d.add_argument("--overwrite", action="store_true", help="write into a folder that has files")
    add_model_options(d)
    d.set_defaults(func=run_demo)


def _data_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--images", default=None, help="image file or folder")
    g.add_argument("--labels", default=None, help="label file or folder (same order as --images)")
    g.add_argument("--synthetic", type=int, default=None, metavar="N",
                   help="use N generated microscopy images instead")


def _pairs(args: argparse.Namespace, held_out: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    from napari_sam.io import expand_inputs, read_image

    if args.synthetic is not None:
        if args.images or args.labels:
            raise UsageError("give --images/--labels or --synthetic, not both")
        if args.synthetic < 1:
            raise UsageError("--synthetic needs at least 1 image")
        from napari_sam.training.synthetic import HELDOUT_PRESET, TRAIN_PRESET, make_dataset

        preset = HELDOUT_PRESET if held_out else TRAIN_PRESET
        return [(img, lab) for img, lab in make_dataset(args.synthetic, preset, 7 if held_out else 0)]
    if not (args.images and args.labels):
        raise UsageError("give --images and --labels (or --synthetic N)")
    images, labels = expand_inputs(args.images), expand_inputs(args.labels)
    if len(images) != len(labels):
        raise UsageError(f"{len(images)} image(s) but {len(labels)} label file(s); they pair in sorted order")
    pairs = []
    for img_path, lab_path in zip(images, labels, strict=True):
        img, lab = np.asarray(read_image(img_path)), np.asarray(read_image(lab_path))
        if lab.shape != img.shape[: lab.ndim] or lab.dtype.kind not in "iub":
            raise ValueError(f"{lab_path.name} does not fit {img_path.name}: labels {lab.shape} "
                             f"{lab.dtype} for an image {img.shape}; labels are integer instance IDs")
        pairs.append((img, lab))
    return pairs


def run_train(args: argparse.Namespace) -> int:
    from napari_sam.training.trainer import TrainConfig, train

    out = Path(args.out)
    if out.exists() and not args.overwrite and (args.resume is None or Path(args.resume) != out):
        raise FileExistsError(f"{out} exists; choose another name or pass --overwrite")
    data = _pairs(args, held_out=False)
    precision = "bf16" if args.precision == "bf16" else "fp32"
    config = TrainConfig(steps=args.steps, lr=args.lr, freeze_encoder=args.freeze_encoder,
                         seed=args.seed, device=args.device, precision=precision,
                         checkpoint_every=max(1, min(200, args.steps)))
    bar = Progress("train", enabled=not args.quiet)
    try:
        result = train(args.model or "tiny-synth", data, out, config=config, resume=args.resume,
                       progress=bar)
    finally:
        bar.close()
    last = result.history[-1] if result.history else {}
    loss = f", last loss {last['loss']:.4f}" if "loss" in last else ""
    print(f"trained {result.steps} step(s){loss}; checkpoint {result.checkpoint} "
          f"(use it with --model {result.checkpoint})")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from napari_sam.training.evaluate import evaluate, format_table

    data = _pairs(args, held_out=True)
    model = load_cli_model(args)
    methods: list[Any] = [model]
    if args.baseline:
        from napari_sam.training.baseline import SeededWatershed

        methods.append(SeededWatershed())
    results = []
    for method in methods:
        bar = Progress(f"eval {getattr(method, 'name', 'model')}", enabled=not args.quiet)
        try:
            results.append(evaluate(method, data, max_objects=args.max_objects, seed=args.seed,
                                    progress=bar))
        finally:
            bar.close()
    print(format_table(results))
    for note in {n for r in results for n in r.notes}:
        print(f"note: {note}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from napari_sam.training.demo import run_demo as demo

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise FileExistsError(f"{out} exists and is not empty; choose another --out or pass --overwrite")
    result = demo(out, model=load_cli_model(args))
    print(f"segmented {result.n_objects} nuclei from one click each "
          f"(mean IoU with the generated ground truth: {result.mean_iou:.3f})")
    for name in ("image", "labels", "ground_truth", "overlay", "points"):
        print(f"  {name:<13} {getattr(result, name)}")
    print("try next:")
    print(f"  napari-sam segment {result.image} --prompts {result.points} --out {out / 'mine.tif'}")
    print(f"  napari-sam auto {result.image} --out {out / 'auto.tif'}")
    print(f"  napari {result.image} {result.labels}")
    return 0
