"""What the stage workers' forkserver imports before it forks the first worker
(:func:`pyama_lib.pipeline.pool.prestart`): the stages, the pool's worker side and the readers
(a copy stage opens its acquisition), which each worker would otherwise load on its first stage.

The cyclic garbage collector is off meanwhile: importing makes a great many objects that live
as long as the process, and the collector would walk them all again and again. Frozen
afterwards, they are skipped by the workers' collections too, and their pages stay shared with
the forkserver instead of being copied into every worker. (``PYAMA_UNTUNED=worker-gc`` turns
this off for the start-up benchmark, ``make bench`` case ``startup``.)
"""

import gc
import os

_TUNED = "worker-gc" not in os.environ.get("PYAMA_UNTUNED", "").split(",")
if _TUNED:
    gc.disable()
try:
    import pyama_lib.io.readers.nd2
    import pyama_lib.io.readers.ome_tiff
    import pyama_lib.pipeline.pool
    import pyama_lib.pipeline.stages  # noqa: F401
finally:
    if _TUNED:
        gc.freeze()
    gc.enable()
