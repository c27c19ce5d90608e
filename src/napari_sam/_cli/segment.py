"""``napari-sam segment``: prompted segmentation of a 2D image or a 3D stack into a label file."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from napari_sam._cli.common import (
    Progress,
    UsageError,
    add_input_options,
    add_model_options,
    load_cli_model,
    open_input,
)

HELP = "segment objects from point / box prompts and write a label image"
DESCRIPTION = """\
Segment objects from prompts and write them as a label image (TIFF or zarr) with the label
scheme and a record of the model and parameters. Coordinates are napari's: (row, col) in
pixels, z = slice index; boxes are (min_row, min_col, max_row, max_col).

Prompts on the command line (--point / --negative / --box) form one object (on slice --z for
a stack). Prompt files add more objects: CSV with columns z,row,col,label[,object] (points) or
z,min_row,min_col,max_row,max_col[,object] (boxes), the same as JSON
({"points": [...], "boxes": [...]}), or a napari Points / Shapes layer saved as CSV. Rows with
the same object value form one object; without it, every box and every positive point is an
object of its own (negative points then apply to the objects on their slice). The object value
is the label ID in the output. On a stack, --propagate follows each object through the slices
from the one it was prompted on.

examples:
  napari-sam segment cells.tif --point 120 85 --out cells_mask.tif
  napari-sam segment cells.tif --box 100 60 150 110 --negative 130 90 --out mask.tif
  napari-sam segment stack.tif --prompts points.csv --out labels.tif
  napari-sam segment stack.zarr --z 12 --point 200 310 --propagate --out nucleus.zarr
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="2D image or 3D stack: TIFF, OME-TIFF, zarr / OME-Zarr")
    p.add_argument("--out", "-o", required=True, help="output labels, .tif or .zarr")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    prompts = p.add_argument_group("prompts")
    prompts.add_argument("--point", nargs=2, type=float, action="append", default=[],
                         metavar=("ROW", "COL"), help="positive point (repeatable)")
    prompts.add_argument("--negative", nargs=2, type=float, action="append", default=[],
                         metavar=("ROW", "COL"), help="negative point (repeatable)")
    prompts.add_argument("--box", nargs=4, type=float, default=None,
                         metavar=("R0", "C0", "R1", "C1"), help="box (min_row min_col max_row max_col)")
    prompts.add_argument("--z", type=int, default=None,
                         help="slice of a stack the command-line prompts are on")
    prompts.add_argument("--prompts", action="append", default=[], metavar="FILE",
                         help="CSV / JSON prompt file or napari Points/Shapes CSV (repeatable)")
    prompts.add_argument("--propagate", action="store_true",
                         help="follow each object through the stack (3D only)")
    add_input_options(p)
    add_model_options(p)
    p.set_defaults(func=run)


def _collect(args: argparse.Namespace, ndim: int, index_shape: tuple[int, ...]) -> list[Any]:
    from napari_sam.io.prompts import ObjectPrompt, check_in_stack, read_prompts

    objects = read_prompts(args.prompts, ndim) if args.prompts else []
    if args.point or args.negative or args.box:
        if ndim == 3 and args.z is None:
            raise UsageError("the image is a stack: say which slice the prompts are on with --z")
        if ndim == 2 and args.z is not None:
            raise UsageError("--z is for stacks; the image is 2D")
        taken = {o.object_id for o in objects}
        obj_id = 1 if 1 not in taken else max(taken) + 1
        pts = np.asarray(args.point + args.negative, dtype=float).reshape(-1, 2)
        objects.insert(0, ObjectPrompt(
            obj_id, () if ndim == 2 else (args.z,), pts,
            np.array([1] * len(args.point) + [0] * len(args.negative)),
            None if args.box is None else np.asarray(args.box, dtype=float),
        ))
    elif args.z is not None:
        raise UsageError("--z needs --point, --negative or --box")
    if not objects:
        raise UsageError("no prompts: give --point ROW COL, --box R0 C0 R1 C1 or --prompts FILE")
    check_in_stack(objects, index_shape)
    if args.propagate:
        if ndim != 3:
            raise UsageError("--propagate needs a 3D stack")
        ids = [o.object_id for o in objects]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise UsageError(f"--propagate: object(s) {twice} have prompts on several slices; "
                             "give each object its prompts on one slice")
    return objects


def _predict_kwargs(obj: Any) -> dict[str, Any]:
    return {
        "points": obj.points if len(obj.points) else None,
        "point_labels": obj.point_labels if len(obj.points) else None,
        "box": obj.box,
    }


def _segment(model: Any, image: Any, objects: list[Any], propagate: bool, bar: Progress) -> np.ndarray:
    """Labels (Y, X) or (Z, Y, X) uint32 with each object under its ID; earlier objects win overlaps."""
    from napari_sam.labels import LabelScheme, write_mask
    from napari_sam.segment import Segmenter

    channel_axis = image.data.ndim - 1 if "C" in image.axes else None
    seg = Segmenter(model, image.data, channel_axis=channel_axis)
    labels = np.zeros(seg.index_shape + seg.plane_shape, dtype=np.uint32)
    for i, obj in enumerate(objects):
        mask = seg.segment(**_predict_kwargs(obj), index=obj.index)
        if propagate:
            volume = seg.propagate(mask, index=obj.index)
            write_mask(labels, volume, LabelScheme(), instance_id=obj.object_id)
        else:
            write_mask(labels[obj.index], mask, LabelScheme(), instance_id=obj.object_id)
        bar(i + 1, len(objects))
    return labels


def run(args: argparse.Namespace) -> int:
    from napari_sam.io import check_writable, image_signature, provenance, write_labels

    image = open_input(args.image, args.key, args.channel)
    ndim = 3 if image.axes.startswith("Z") else 2
    objects = _collect(args, ndim, tuple(image.shape[:1]) if ndim == 3 else ())
    out = check_writable(args.out, args.overwrite)
    model = load_cli_model(args)
    bar = Progress("segment", enabled=not args.quiet)
    try:
        labels = _segment(model, image, objects, args.propagate, bar)
    finally:
        bar.close()
    params = {
        "command": "segment",
        "objects": [
            {"object": o.object_id, "index": list(o.index), "points": o.points.tolist(),
             "point_labels": o.point_labels.tolist(),
             "box": None if o.box is None else o.box.tolist()}
            for o in objects
        ],
        "propagate": args.propagate, "key": args.key, "channel": args.channel,
    }
    record = provenance(model, params, args.image, image_signature(image.data, ndim - 2))
    write_labels(out, labels, None, record, overwrite=args.overwrite)
    found = len(np.unique(labels)) - int((labels == 0).any())
    print(f"wrote {out}: {found} object(s), labels of shape {labels.shape}")
    return 0
