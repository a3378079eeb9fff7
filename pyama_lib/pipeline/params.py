"""The parameters of a processing run: one typed section per stage, parsed once."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Any

import yaml
from pydantic import Field, ValidationError

from pyama_lib.config import PRESETS
from pyama_lib.errors import ParamsError
from pyama_lib.params import Params, params_error
from pyama_lib.processing.background import BackgroundParams
from pyama_lib.processing.extraction import ExtractionParams
from pyama_lib.processing.segmentation import SegmentationParams
from pyama_lib.processing.tracking import TrackingParams

__all__ = ["PRESETS", "ProcessingParams", "parse_params", "preset", "with_overrides"]


class ProcessingParams(Params):
    """Per-stage parameters of a run; every section defaults to PyAMA's values.

    Examples
    --------
    >>> p = parse_params({"tracking": {"max_gap": 2}})
    >>> p.tracking.max_gap, p.segmentation.n_sigma
    (2, 3.0)
    """

    segmentation: SegmentationParams = Field(default_factory=SegmentationParams)
    background: BackgroundParams = Field(default_factory=BackgroundParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)
    extraction: ExtractionParams = Field(default_factory=ExtractionParams)


def preset(name: str) -> dict[str, Any]:
    """The sections of the preset ``name`` (one of :data:`PRESETS`), as its YAML gives them.

    Examples
    --------
    >>> preset("accurate")["tracking"]
    {'start_new_tracks': True, 'max_gap': 2}
    """
    if name not in PRESETS:
        raise ParamsError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    text = resources.files("pyama_lib.pipeline").joinpath("presets", f"{name}.yaml").read_text()
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


def parse_params(params: ProcessingParams | Mapping[str, Any] | str | None) -> ProcessingParams:
    """:class:`ProcessingParams` from ``{"segmentation": {...}, "tracking": {...}, ...}``, or
    from a preset's name (``"accurate"``).

    Missing (or empty) sections take PyAMA's defaults; unknown sections or names, and values
    out of range, raise :class:`ParamsError` naming each one and what is allowed.

    Examples
    --------
    >>> parse_params("accurate").segmentation.iterations
    2
    """
    if isinstance(params, ProcessingParams):
        return params
    if isinstance(params, str):
        params = preset(params)
    if params is not None and not isinstance(params, Mapping):
        raise ParamsError(
            f"parameters must be a mapping of sections (segmentation, background, tracking, "
            f"extraction), got {type(params).__name__}"
        )
    sections = {k: v for k, v in dict(params or {}).items() if v is not None}
    try:
        return ProcessingParams.model_validate(sections)
    except ValidationError as exc:
        raise params_error(exc, ProcessingParams, "params") from None
