"""Scale-out: the per-slice work of a stack as Dask tasks, locally or on a cluster.

Two jobs run slice by slice:

* :func:`embed_stack` computes every slice's image embedding into a shared embedding cache
  folder (the one :class:`napari_sam.EmbeddingCache` reads), optionally exported to one zarr store;
* :func:`segment_everything_stack` segments everything on every slice, then links object IDs
  through z and writes one label file (TIFF or zarr) with its provenance record.

Where the tasks run (``scheduler``):

* ``None`` or ``"threads"``: Dask's local thread pool (``workers`` threads, default 1);
* ``"processes"``: a local ``dask.distributed`` cluster of ``workers`` processes on 127.0.0.1;
* ``"tcp://host:port"``: the scheduler of a running Dask cluster;
* a ``dask.distributed.Client``.

Each task receives the input path and the model name (never the pixels or the weights): a worker
loads the model once per process, reads its own planes from the TIFF / zarr input and writes its
results to files, so a volume larger than memory flows through one plane at a time. On a cluster
the input, the cache folder and the output must be on a file system every worker sees.

A killed run resumes: finished embeddings are in the cache folder, and every segmented slice is
recorded by a done-marker in ``<out>.partial/`` (kept until the result is written), so running the
same command again computes only what is missing.
"""

from napari_sam.distributed.jobs import StackRun, embed_stack, segment_everything_stack
from napari_sam.distributed.worker import RunCancelled

__all__ = ["RunCancelled", "StackRun", "embed_stack", "segment_everything_stack"]
