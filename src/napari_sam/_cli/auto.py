"""``napari-sam auto``: segment everything on a 2D image, a 3D stack or a folder of them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from napari_sam._cli.common import (
    Progress,
    UsageError,
    add_input_options,
    add_model_options,
    add_scale_options,
    check_workers,
    model_ref,
)

HELP = "segment everything (automatic instance segmentation) in 2D, 3D or a folder"
DESCRIPTION = """\
Segment every object automatically: a grid of point prompts on each slice, the masks filtered
by predicted quality and stability, duplicates removed, small debris dropped. On a stack, objects
overlapping on neighbouring slices keep one ID through z. Slices are processed as Dask tasks
(threads by default; --scheduler for local processes or a cluster). An interrupted run resumes:
finished slices are kept in OUT.partial/ until the result is written.

INPUT may be a folder: every image in it is segmented into OUT (a folder, created if missing)
as <name>_labels.tif (or .zarr with --format zarr).

examples:
  napari-sam auto cells.tif --out cells_labels.tif
  napari-sam auto stack.zarr --out stack_labels.zarr --points-per-side 48
  napari-sam auto images/ --out labels/ --scheduler processes --workers 4
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("auto", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="2D image, 3D stack (TIFF, OME-TIFF, zarr) or a folder of them")
    p.add_argument("--out", "-o", required=True, help="labels file (.tif / .zarr), or a folder")
    p.add_argument("--format", choices=("tif", "zarr"), default="tif",
                   help="output format for a folder INPUT (default tif)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    g = p.add_argument_group("segment everything")
    g.add_argument("--points-per-side", type=int, default=32, help="prompt grid per side (default 32)")
    g.add_argument("--pred-iou-thresh", type=float, default=None,
                   help="least predicted IoU (default: the model's recommendation, else 0.88)")
    g.add_argument("--stability-score-thresh", type=float, default=None,
                   help="least stability (default: the model's recommendation, else 0.95)")
    g.add_argument("--min-area", type=int, default=16,
                   help="drop objects and fill holes under this many pixels (16)")
    g.add_argument("--box-nms-thresh", type=float, default=0.7,
                   help="box IoU above which the weaker of two masks is dropped (0.7)")
    g.add_argument("--max-area-fraction", type=float, default=0.4,
                   help="drop masks covering more than this fraction of a slice (0.4)")
    g.add_argument("--crop-n-layers", type=int, default=0, help="extra zoomed crop layers (0)")
    g.add_argument("--link-iou", type=float, default=0.25,
                   help="least IoU for an object to keep its ID on the next slice (0.25)")
    g.add_argument("--no-link", action="store_true", help="new IDs on every slice")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="keep the embeddings in this cache folder (default: memory only)")
    add_input_options(p)
    add_model_options(p)
    add_scale_options(p)
    p.set_defaults(func=run)


def _jobs(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    from napari_sam.io import expand_inputs

    source = Path(args.input).expanduser()
    inputs = expand_inputs(source)
    if inputs == [source]:
        if Path(args.out).is_dir():
            raise UsageError(f"--out {args.out} is a folder; give a .tif or .zarr file name")
        return [(source, Path(args.out))]
    out_dir = Path(args.out).expanduser()
    if out_dir.suffix.lower() in (".tif", ".tiff", ".zarr"):
        raise UsageError(f"INPUT {source} is a folder: --out must be a folder, not {out_dir.name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    return [(p, out_dir / f"{p.name.split('.')[0]}_labels.{args.format}") for p in inputs]


def run(args: argparse.Namespace) -> int:
    from napari_sam.distributed import segment_everything_stack
    from napari_sam.distributed.runner import open_scheduler
    from napari_sam.io import check_writable

    check_workers(args)
    jobs = _jobs(args)
    for _, out in jobs:  # refuse before any work starts
        check_writable(out, args.overwrite)
    model, device, precision = model_ref(args)
    params: dict[str, Any] = {
        "points_per_side": args.points_per_side, "pred_iou_thresh": args.pred_iou_thresh,
        "stability_score_thresh": args.stability_score_thresh,
        "min_mask_region_area": args.min_area, "crop_n_layers": args.crop_n_layers,
        "box_nms_thresh": args.box_nms_thresh, "max_area_fraction": args.max_area_fraction,
    }
    # the model's recommended settings where none was given, so the record shows what ran
    from napari_sam.segment.everything import given_over_recommended
    from napari_sam.weights import recommended_everything

    params = given_over_recommended(recommended_everything(model), params)
    with open_scheduler(args.scheduler, args.workers) as scheduler:  # one local cluster for all files
        for source, out in jobs:
            label = f"auto {source.name}" if len(jobs) > 1 else "auto"
            bar = Progress(label, enabled=not args.quiet)
            try:
                result = segment_everything_stack(
                    source, out, model, params=params, link=not args.no_link, link_iou=args.link_iou,
                    cache_dir=args.cache_dir, key=args.key, channel=args.channel, device=device,
                    precision=precision, memory_budget=args.memory_budget, scheduler=scheduler,
                    workers=args.workers, overwrite=args.overwrite, progress=bar,
                )
            finally:
                bar.close()
            resumed = f", {result.reused} resumed" if result.reused else ""
            print(f"wrote {result.path}: {result.objects} object(s) in {result.planes} slice(s){resumed}")
    return 0
