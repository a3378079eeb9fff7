"""Which reader opens which input: :func:`open_acquisition`, by the file's name or the folder's
contents.

The readers load on demand, so opening an OME-TIFF never imports the ND2 library, and a file
that needs the optional ``formats`` extra (bioio) says so only when such a file is opened.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from pyama_lib.core.errors import AcquisitionNotFoundError, UnsupportedFormatError
from pyama_lib.io.readers.acquisition import TIFF_SUFFIXES, Acquisition


def open_acquisition(path: str | Path, **options: Any) -> Acquisition:
    """Open an acquisition: a file (ND2, OME-TIFF or other TIFF stack, or a format bioio reads)
    or a folder (a TIFF sequence, a Micro-Manager dataset).

    Options go to the reader, and a reader refuses those it does not take: ``times="nominal"|
    "measured"`` (ND2: frame index × the time loop's period as PyAMA uses, or each FOV's
    measured per-frame stamps); ``interval_min`` (files without frame times: minutes between
    frames); ``pattern`` (a TIFF sequence's naming, see
    :mod:`~pyama_lib.io.readers.sequence_names`); ``axes`` (a TIFF stack whose file names no
    axes, e.g. ``"TC2"``, see :class:`~pyama_lib.io.readers.ome_tiff.OmeTiffAcquisition`).
    """
    path = Path(path)
    reader = reader_for(path)
    accepted = set(inspect.signature(reader.__init__).parameters) - {"self", "path"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise UnsupportedFormatError(
            path,
            f"option(s) {unknown} do not apply to {reader.__name__} inputs; "
            f"it accepts {sorted(accepted) or 'no options'}",
        )
    return reader(path, **options)


def reader_for(path: Path) -> type[Acquisition]:
    """The reader class for ``path``, chosen without opening it."""
    name = path.name.lower()
    if path.is_dir():
        # Micro-Manager datasets of multi-image files: NDTiff, or MMStack OME-TIFFs named after
        # their folder as Micro-Manager writes them. Found by name, not by listing the folder:
        # a TIFF sequence of 100 000 files is listed once per process, by its own reader.
        mmstack = (f"{path.name}_MMStack{pos}.ome.tif" for pos in ("", "_Pos0", "_1-Pos_000_000"))
        if (path / "NDTiff.index").is_file() or any((path / f).is_file() for f in mmstack):
            from pyama_lib.io.readers.ome_tiff import OmeTiffAcquisition

            return OmeTiffAcquisition
        from pyama_lib.io.readers.tiff_sequence import TiffSequenceAcquisition

        return TiffSequenceAcquisition
    if name.endswith(".nd2"):
        from pyama_lib.io.readers.nd2 import ND2Acquisition

        return ND2Acquisition
    if name.endswith(TIFF_SUFFIXES):
        from pyama_lib.io.readers.ome_tiff import OmeTiffAcquisition

        return OmeTiffAcquisition
    if not path.exists():
        raise AcquisitionNotFoundError(path, "no such file or folder; check the path")
    # Imports no bioio: a missing formats extra is reported when the file is opened.
    from pyama_lib.io.readers.bioio_files import BIOIO_SUFFIXES, BioioAcquisition

    if name.endswith(BIOIO_SUFFIXES):
        return BioioAcquisition
    raise UnsupportedFormatError(
        path,
        f"unknown file type {path.suffix or '(no extension)'!r}; PyAMA Flow reads Nikon .nd2, "
        "OME-TIFF and TIFF stacks (.tif/.tiff), folders of TIFF images, and with the formats "
        "extra Zeiss .czi, Leica .lif and DeltaVision .dv/.r3d",
    )
