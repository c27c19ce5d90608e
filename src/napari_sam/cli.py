"""The ``napari-sam`` command line.

Subcommands live in :mod:`napari_sam._cli` (one small module each). User mistakes (a missing
file, a wrong option, an unreadable prompt file, an existing output, ...) end with one line
``napari-sam: error: ...`` on stderr and exit status 2 (usage) or 1 (anything else), never a
traceback; genuine bugs still raise.

>>> from napari_sam.cli import main
>>> main(["models"])                                   # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from napari_sam import __version__
from napari_sam._cli.common import CliParser, UsageError

__all__ = ["build_parser", "main"]

SUBCOMMANDS = ("segment", "auto", "embed", "models", "train")
DESCRIPTION = """\
Segment Anything for microscopy, from the command line.
Coordinates are napari's: (row, col) in pixels, (z, row, col) in stacks.
Run 'napari-sam COMMAND --help' for the options and examples of each command.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = CliParser(
        prog="napari-sam", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"napari-sam {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND",
                                parser_class=lambda **kw: CliParser(parents=[common], **kw))
    for name in SUBCOMMANDS:
        importlib.import_module(f"napari_sam._cli.{name}").add_parser(sub)
    return parser


def _one_line(err: BaseException) -> str:
    text = str(err) or err.__class__.__name__
    if isinstance(err, KeyError):
        text = f"missing entry {text}"
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 error, 2 usage, 130 interrupted)."""
    # OpenMP threads that sleep while waiting instead of spinning: on a machine whose cores are
    # busy with other work, spinning threads made segment-everything 5x slower (measured, see
    # docs/cli.md). Set before torch is imported; an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from napari_sam._download import DownloadCancelled, MissingDependencyError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return int(exc.code or 0)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except UsageError as err:
        print(f"napari-sam: error: {_one_line(err)} (see 'napari-sam {args.command} --help')",
              file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ValueError, OSError, MissingDependencyError, DownloadCancelled) as err:
        print(f"napari-sam: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("napari-sam: interrupted (finished work is kept; run the same command to resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
