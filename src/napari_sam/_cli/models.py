"""``napari-sam models``: list the registered models, download one, verify one."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_sam._cli.common import Progress, UsageError

HELP = "list the registered models; download or verify one"
DESCRIPTION = """\
List the registered SAM models with their architecture, size and whether they are in the cache.
--download NAME fetches a model (hash-checked) into the cache; --verify NAME_OR_PATH re-hashes a
cached file against the registry and checks that it loads as a SAM model.

examples:
  napari-sam models
  napari-sam models --download vit_b
  napari-sam models --verify vit_b
  napari-sam models --verify my_finetuned.pt
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help=HELP, description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    action = p.add_mutually_exclusive_group()
    action.add_argument("--download", metavar="NAME", help="download a registered model")
    action.add_argument("--verify", metavar="NAME_OR_PATH", help="check a model's hash and that it loads")
    p.set_defaults(func=run)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return "?"  # pragma: no cover


def _list() -> int:
    from napari_sam.weights import cache_dir, list_models

    infos = list_models()
    rows = [("name", "arch", "size", "cached", "description")]
    rows += [(m.name, m.arch, _size(m.size_bytes), "yes" if m.is_cached else "no", m.description)
             for m in infos]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    print(f"\ncache: {cache_dir() / 'weights'}")
    return 0


def _download(name: str, quiet: bool) -> int:
    from napari_sam.weights import REGISTRY, download

    if name not in REGISTRY:
        from napari_sam.weights import model_path

        model_path(name)  # raises UnknownModelError listing the names
        print(f"{name} is shipped with napari-sam; nothing to download")
        return 0
    bar = Progress(f"download {name} (MB)", enabled=not quiet)
    try:
        path = download(name, progress=lambda d, t: bar(d // 10**6, max(t, 1) // 10**6))
    finally:
        bar.close()
    print(f"{name}: {path}")
    return 0


def _verify(name_or_path: str, args: argparse.Namespace) -> int:
    from napari_sam._download import file_hashes, split_hash
    from napari_sam.weights import REGISTRY, SHIPPED, list_models, load_model, model_path

    if name_or_path in REGISTRY or name_or_path in SHIPPED:
        info = next(m for m in list_models() if m.name == name_or_path)
        path = model_path(name_or_path)
        if not path.is_file():
            fix = ("reinstall napari-sam" if name_or_path in SHIPPED
                   else f"run: napari-sam models --download {name_or_path}")
            raise FileNotFoundError(f"{name_or_path} is not on this machine ({path}); {fix}")
        if info.known_hash:
            algorithm, digest = split_hash(info.known_hash)
            actual = file_hashes(path, [algorithm])[algorithm]  # hashed again, no stamp used
            if actual != digest:
                raise ValueError(
                    f"{path} has {algorithm} {actual}, the registry says {digest}: the file is "
                    f"damaged; delete it and run: napari-sam models --download {name_or_path}"
                )
            print(f"{name_or_path}: {algorithm} ok ({path})")
    elif not Path(name_or_path).expanduser().is_file():
        raise UsageError(f"--verify {name_or_path}: neither a registered model nor a file")
    model = load_model(name_or_path, device="cpu", precision="fp32")
    params = sum(p.numel() for p in model.parameters())
    print(f"{model.name}: loads as a SAM model, image size {model.img_size}, "
          f"encoder {model.config.encoder}, {params / 1e6:.1f}M parameters, sha256 {model.weights_hash}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.download:
        return _download(args.download, args.quiet)
    if args.verify:
        return _verify(args.verify, args)
    return _list()
