"""Readers and writers: acquisitions (``readers/``), the Zarr store, traces, results files.

The public reading API::

    from pyama_lib.io import open_acquisition
"""

from pyama_lib.io.readers.acquisition import Acquisition
from pyama_lib.io.readers.formats import open_acquisition

__all__ = ["Acquisition", "open_acquisition"]
