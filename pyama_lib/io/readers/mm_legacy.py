"""The ``metadata.txt`` of a Micro-Manager one-file-per-image folder: channel names and each
image's elapsed time.

Micro-Manager writes one JSON object: a ``Summary`` block (``ChNames``, ``Interval_ms``) and
one block per image holding its ``ElapsedTime-ms`` and ``FileName`` (1.4: keys
``FrameKey-<t>-<c>-<z>``; 2.x: ``Metadata-<folder>/<file>``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyama_lib.core.errors import CorruptFileError

METADATA_FILE = "metadata.txt"


@dataclass
class MicroManagerMetadata:
    """What a ``metadata.txt`` says: channel names, ms per file name, the nominal interval."""

    channel_names: list[str] = field(default_factory=list)
    elapsed_ms: dict[str, float] = field(default_factory=dict)
    interval_ms: float | None = None


def read_metadata(folder: Path) -> MicroManagerMetadata | None:
    """The folder's ``metadata.txt``, or None when it has none.

    Raises
    ------
    CorruptFileError
        The file is not JSON, even with its closing brace added: Micro-Manager writes it as
        the acquisition goes, so an unfinished or crashed acquisition can leave a block cut.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> text = '{"Summary": {"ChNames": ["DAPI"], "Interval_ms": 60000},'
    >>> text += ' "FrameKey-1-0-0": {"ElapsedTime-ms": 60012.5, "FileName": "img_1.tif"}}'
    >>> _ = (folder / "metadata.txt").write_text(text)
    >>> read_metadata(folder)
    MicroManagerMetadata(channel_names=['DAPI'], elapsed_ms={'img_1.tif': 60012.5}, interval_ms=60000.0)
    """  # noqa: E501
    path = folder / METADATA_FILE
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError as exc:
        # Micro-Manager appends a block per image and closes the object at the end; its own
        # reader accepts a file whose closing brace is missing (its test folders have one).
        data = _closed(text)
        if data is None:
            raise CorruptFileError(
                path,
                f"is not complete JSON ({exc}); Micro-Manager finishes this file when the "
                "acquisition ends: wait for it, or remove the file to process without its times",
            ) from None
    if not isinstance(data, dict):
        raise CorruptFileError(path, "is not a Micro-Manager metadata object")
    summary = data.get("Summary") if isinstance(data.get("Summary"), dict) else {}
    names = summary.get("ChNames")
    meta = MicroManagerMetadata(
        channel_names=[str(n) for n in names] if isinstance(names, list) else [],
        interval_ms=_positive(summary.get("Interval_ms")),
    )
    for key, block in data.items():
        if key == "Summary" or not isinstance(block, dict):
            continue
        elapsed = number(block.get("ElapsedTime-ms"))
        name = block.get("FileName") or key.split("-", 1)[-1]
        if elapsed is not None and isinstance(name, str):
            meta.elapsed_ms[Path(name.replace("\\", "/")).name] = elapsed
    return meta


def _closed(text: str) -> Any:
    try:
        return json.loads(text.rstrip().rstrip(",") + "\n}")
    except ValueError:
        return None


def number(value: Any) -> float | None:
    """A metadata value as a finite float, else None (Micro-Manager 1.4 writes some numbers as
    strings).

    Examples
    --------
    >>> number("5000"), number("nan"), number(None), number(float("inf"))
    (5000.0, None, None, None)
    """
    try:
        found = float(value)
    except (TypeError, ValueError):
        return None
    return found if math.isfinite(found) else None


def _positive(value: Any) -> float | None:
    found = number(value)
    return found if found is not None and found > 0 else None
