"""Single-image TIFF files, as a sequence holds them: read one, check its header."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile

from pyama_lib.core.errors import CorruptFileError, UnsupportedFormatError
from pyama_lib.io.readers.acquisition import TIFF_SUFFIXES


def read_header(path: Path, shape: tuple[int, int], dtype: np.dtype) -> None:
    """Check that ``path`` holds one 2-D image of ``shape`` and ``dtype`` (no pixels read)."""
    try:
        with tifffile.TiffFile(path) as tif:
            _check_page(path, tif, shape, dtype, decode=False)
    except (UnsupportedFormatError, CorruptFileError):
        raise
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def read_image(path: Path, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """The 2-D image in ``path``, checked against the sequence's ``shape`` and ``dtype``."""
    try:
        with tifffile.TiffFile(path) as tif:
            return _check_page(path, tif, shape, dtype, decode=True)
    except (UnsupportedFormatError, CorruptFileError):
        raise
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def _check_page(
    path: Path, tif: tifffile.TiffFile, shape: tuple[int, int], dtype: np.dtype, *, decode: bool
) -> np.ndarray | None:
    pages = tif.pages
    page = pages.first
    if len(pages) != 1 or page.shape != shape or page.dtype != dtype:
        what = f"{len(pages)} pages" if len(pages) != 1 else f"{page.shape} {page.dtype}"
        raise UnsupportedFormatError(
            path,
            f"holds {what}, but the sequence's images are single {shape[0]}x{shape[1]} "
            f"{dtype} planes (from its first file); a sequence needs one 2-D image of one "
            "shape and dtype per file: move other files out of the folder",
        )
    if not decode:
        return None
    ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=True)]
    if max(ends, default=0) > os.fstat(tif.filehandle.fileno()).st_size:
        raise CorruptFileError(path, "its pixel data run past the end of the file: truncated")
    return page.asarray()


def _unreadable(path: Path, exc: Exception) -> CorruptFileError:
    if isinstance(exc, FileNotFoundError):
        return CorruptFileError(
            path, "was listed in the sequence but is gone now; the folder changed while read"
        )
    return CorruptFileError(
        path,
        f"cannot be read as a TIFF image ({type(exc).__name__}: {exc}); it is damaged, "
        "truncated or still being written",
    )


def is_tiff_name(name: str) -> bool:
    """Whether ``name`` is a visible TIFF file name (copy tools write hidden temporary names).

    Examples
    --------
    >>> is_tiff_name("t001c1.tif"), is_tiff_name(".t001c1.tif.XyZ"), is_tiff_name("notes.txt")
    (True, False, False)
    """
    return not name.startswith(".") and name.lower().endswith(TIFF_SUFFIXES)
