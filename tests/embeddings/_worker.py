"""Run in a separate process by the tests: embed every slice of a saved stack through a disk cache.

usage: python _worker.py STACK.npy CACHE_DIR [START]
Prints one line: "encoded=<images> corrupt=<files found damaged>".
"""

from __future__ import annotations

import sys

import numpy as np
import torch

torch.set_num_threads(1)
sys.path.insert(0, __file__.rsplit("/", 1)[0])
from emb_helpers import make_model  # noqa: E402

from napari_sam.embeddings import EmbeddingCache  # noqa: E402


def main() -> None:
    stack = np.load(sys.argv[1])
    model = make_model(0)
    counter = [0]
    original = model.encode

    def counting(x: torch.Tensor) -> torch.Tensor:
        counter[0] += int(x.shape[0])
        return original(x)

    model.encode = counting
    cache = EmbeddingCache(model, memory_budget="64 MB", directory=sys.argv[2])
    view = cache.view(stack)
    start = int(sys.argv[3]) if len(sys.argv) > 3 else None
    view.precompute(start=start)
    for z in range(stack.shape[0]):
        view.get(z)
    assert cache.disk is not None
    sys.stdout.write(f"encoded={counter[0]} corrupt={cache.disk.corrupt_found}\n")


if __name__ == "__main__":
    main()
