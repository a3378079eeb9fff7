"""What the stage workers' forkserver imports before it forks the first worker
(:func:`pyama_lib.pipeline.pool.prestart`): the stages, the pool's worker side and the readers
(a copy stage opens its acquisition), which each worker would otherwise load on its first stage.

The cyclic garbage collector is off meanwhile: importing makes a great many objects that live
as long as the process, and the collector walked them all again and again (about a fifth of an
import's CPU). Frozen afterwards, they are skipped by the workers' collections too, and their
pages stay shared with the forkserver instead of being copied into every worker.
"""

import gc

gc.disable()
try:
    import pyama_lib.io.nd2_reader
    import pyama_lib.io.ome_tiff
    import pyama_lib.pipeline.pool
    import pyama_lib.pipeline.stages  # noqa: F401
finally:
    gc.freeze()
    gc.enable()
