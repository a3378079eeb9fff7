"""Named parameter sets beyond PyAMA, shipped as YAML beside this module.

A preset is a partial parameters file (``accurate.yaml``: sections and the values that differ
from PyAMA's defaults); copy one to edit it, or pass ``--params`` beside it, whose values win
name by name (:func:`with_overrides`).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml

from pyama_lib.core.errors import ParamsError

#: The presets shipped here (the YAML files' names).
PRESETS = ("accurate",)


def preset(name: str) -> dict[str, Any]:
    """The sections of the preset ``name`` (one of :data:`PRESETS`), as its YAML gives them.

    Examples
    --------
    >>> preset("accurate")["tracking"]
    {'start_new_tracks': True, 'max_gap': 2}
    """
    if name not in PRESETS:
        raise ParamsError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    text = resources.files(__name__).joinpath(f"{name}.yaml").read_text()
    return yaml.safe_load(text)


def with_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base``'s sections with ``overrides`` on top, name by name within each section.

    Examples
    --------
    >>> with_overrides({"tracking": {"max_gap": 2, "start_new_tracks": True}},
    ...                {"tracking": {"max_gap": 1}})
    {'tracking': {'max_gap': 1, 'start_new_tracks': True}}
    """
    merged = {section: dict(values or {}) for section, values in base.items()}
    for section, values in overrides.items():
        if isinstance(values, Mapping):
            merged[section] = {**merged.get(section, {}), **values}
        else:  # not a section: parse_params names the mistake
            merged[section] = values
    return merged
