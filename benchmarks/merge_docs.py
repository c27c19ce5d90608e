"""Assemble docs/benchmarks.md from the per-part results each benchmark script writes.

usage: python benchmarks/merge_docs.py

Parts, in order: docs/benchmarks_model.md (bench_model.py), benchmarks_embeddings.md
(bench_embeddings.py), benchmarks_segment.md (bench_segment.py), benchmarks_training.md
(scripts/train_tiny_synth.py --benchmark), benchmarks_scale.md (bench_scale.py). A missing part
is skipped with a note on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
PARTS = ("model", "embeddings", "segment", "training", "scale")
HEADER = """# Benchmarks

Every number here comes from a script in `benchmarks/` (or `napari_sam.training.evaluate` for quality),
run on the development machine: 2 cores of an AMD EPYC with AVX-512 bf16, torch 2.13.0+cpu. That
machine was sometimes shared with other jobs while these ran (each section notes its load or run
conditions), so absolute times can be inflated and noisy; the ratios against the reference come from
interleaved runs in one process where both sides saw the same load. No GPU was lent to this task, so
there are no GPU figures yet. The per-part sources are `docs/benchmarks_*.md`, written by each script;
`python benchmarks/merge_docs.py` assembles this page from them.
"""


def main() -> int:
    chunks = [HEADER]
    for part in PARTS:
        path = DOCS / f"benchmarks_{part}.md"
        if not path.exists():
            print(f"merge_docs: {path.name} missing, skipped", file=sys.stderr)
            continue
        chunks.append(path.read_text(encoding="utf-8").strip() + "\n")
    (DOCS / "benchmarks.md").write_text("\n".join(chunks), encoding="utf-8")
    print(f"wrote {DOCS / 'benchmarks.md'} from {len(chunks) - 1} parts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
