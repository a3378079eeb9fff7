"""Readers and writers: acquisitions (ND2, OME-TIFF), the Zarr store, traces, results YAML.

The public reading API::

    from pyama_lib.io import open_acquisition
"""

from pyama_lib.io.acquisition import Acquisition, open_acquisition

__all__ = ["Acquisition", "open_acquisition"]
