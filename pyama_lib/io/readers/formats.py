"""Which reader opens which file: :func:`open_acquisition`, by the file's name.

The readers load on demand, so opening an OME-TIFF never imports the ND2 library.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from pyama_lib.core.errors import AcquisitionNotFoundError, UnsupportedFormatError
from pyama_lib.io.readers.acquisition import TIFF_SUFFIXES, Acquisition


def open_acquisition(path: str | Path, **options: Any) -> Acquisition:
    """Open an ND2 or OME-TIFF acquisition.

    Options: ``times="nominal"|"measured"`` (ND2: frame index × the time loop's period as PyAMA
    uses, or each FOV's measured per-frame stamps); ``interval_min=1.0`` (OME-TIFF without
    ``DeltaT``: minutes between frames).
    """
    path = Path(path)
    name = path.name.lower()
    reader: type[Acquisition] | None = None
    if name.endswith(".nd2"):
        from pyama_lib.io.readers.nd2 import ND2Acquisition as reader
    elif name.endswith(TIFF_SUFFIXES):
        from pyama_lib.io.readers.ome_tiff import OmeTiffAcquisition as reader
    if reader is not None:
        accepted = set(inspect.signature(reader.__init__).parameters) - {"self", "path"}
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise UnsupportedFormatError(
                path,
                f"option(s) {unknown} do not apply to {reader.__name__} files; "
                f"it accepts {sorted(accepted) or 'no options'}",
            )
        return reader(path, **options)
    if not path.exists():
        raise AcquisitionNotFoundError(path, "no such file; check the path")
    raise UnsupportedFormatError(
        path,
        f"unknown file type {path.suffix or '(no extension)'!r}; "
        "PyAMA Flow reads Nikon .nd2 and OME-TIFF (.ome.tif/.ome.tiff)",
    )
