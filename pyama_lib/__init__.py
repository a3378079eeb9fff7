"""PyAMA Flow's pure library: readers, the Zarr store, processing stages, analysis.

No Prefect here; the orchestration lives in the ``tasks`` and ``flows`` packages.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pyama-flow")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
