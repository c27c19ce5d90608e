"""``napari-sam embed``: precompute a stack's embeddings into the cache or a zarr store."""

from __future__ import annotations

import argparse

from napari_sam._cli.common import (
    Progress,
    add_input_options,
    add_model_options,
    add_scale_options,
    check_workers,
    model_ref,
)

HELP = "precompute the embeddings of every slice of a stack"
DESCRIPTION = """\
Compute the SAM image embedding of every slice of a 2D image or 3D stack ahead of time, so that
clicking in napari (or 'napari-sam segment') is immediate. Embeddings go to the embedding cache
folder (default: the user cache; --cache-dir to choose, e.g. a shared folder of a cluster) and,
with --export, into one zarr store that can be copied to another machine. Slices already in the
cache are skipped, so an interrupted run resumes where it stopped.

examples:
  napari-sam embed stack.tif
  napari-sam embed stack.zarr --model vit_b --cache-dir /shared/emb --scheduler tcp://head:8786
  napari-sam embed stack.tif --scheduler processes --workers 4 --export stack_embeddings.zarr
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stack", help="2D image or 3D stack: TIFF, OME-TIFF, zarr / OME-Zarr")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="embedding cache folder (default: <user cache>/napari-sam/embeddings)")
    p.add_argument("--export", default=None, metavar="STORE.zarr",
                   help="also write all embeddings into this zarr store")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --export store")
    add_input_options(p)
    add_model_options(p)
    add_scale_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_sam.distributed import embed_stack

    check_workers(args)
    model, device, precision = model_ref(args)
    bar = Progress("embed", enabled=not args.quiet)
    try:
        result = embed_stack(
            args.stack, model, cache_dir=args.cache_dir, export=args.export, key=args.key,
            channel=args.channel, device=device, precision=precision,
            memory_budget=args.memory_budget, scheduler=args.scheduler, workers=args.workers,
            overwrite=args.overwrite, progress=bar,
        )
    finally:
        bar.close()
    print(f"{result.planes} slice(s): {result.computed} computed, {result.reused} already cached; "
          f"embeddings in {result.path}")
    return 0
