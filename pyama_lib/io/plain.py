"""Values as plain YAML/JSON builtins, for every file PyAMA Flow writes; times as ISO 8601.

``yaml.safe_dump`` and ``json.dumps`` refuse paths, tuples, numpy scalars and parameter models;
run records, ``processing_results.yaml`` and the store's completion markers all go through
:func:`plain` first, so one value is written the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import PurePath
from typing import Any

import numpy as np
from pydantic import BaseModel

from pyama_lib.core.errors import InputDataError


def plain(value: Any, where: str = "value") -> Any:
    """``value`` as dicts, lists, str, int, float, bool and None.

    Mapping keys become strings unless they are ints; tuples and sets become lists (sets
    sorted); numpy scalars and arrays their Python equivalents; paths strings; pydantic models
    their JSON form. Anything else raises :class:`InputDataError` naming ``where``.

    Examples
    --------
    >>> from pathlib import Path
    >>> plain({"fl": (1, 2), "out": Path("/data"), 3: np.float32(0.5)})
    {'fl': [1, 2], 'out': '/data', 3: 0.5}
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {
            (k if isinstance(k, int | str) else str(k)): plain(v, f"{where}.{k}")
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [plain(v, where) for v in value]
    if isinstance(value, set | frozenset):
        return [plain(v, where) for v in sorted(value, key=str)]
    raise InputDataError(
        f"{where}: a {type(value).__name__} cannot be written to a YAML/JSON file; "
        "pass numbers, strings, lists or dicts"
    )


def iso_time(timestamp: float | None = None) -> str:
    """``timestamp`` (epoch seconds; default now) as local time with UTC offset (readable,
    and comparable across time zones)."""
    moment = datetime.now() if timestamp is None else datetime.fromtimestamp(timestamp)
    return moment.astimezone().isoformat(timespec="seconds")
