"""The parameters of a processing run: one typed section per stage, parsed once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationError

from pyama_lib.core.errors import ParamsError
from pyama_lib.core.params import Params, params_error
from pyama_lib.pipeline.presets import preset
from pyama_lib.processing.background import BackgroundParams
from pyama_lib.processing.extraction import ExtractionParams
from pyama_lib.processing.segmentation import SegmentationParams
from pyama_lib.processing.tracking import TrackingParams


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
