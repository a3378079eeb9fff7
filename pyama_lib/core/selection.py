"""What a run processes: the stages, the channels and the FOVs, in PyAMA's terms.

Shared by the stages, the readers of results files, the flows and PyAMA-compatible scripts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pyama_lib.core.errors import ParamsError

#: The processing stages of one FOV, in pipeline order.
STAGES = ("copy", "segment", "correct", "track", "extract")

#: The fluorescence channel processed when none is given (PyAMA's usual layout: phase
#: contrast in channel 0, one fluorescence channel in channel 1).
DEFAULT_FL: tuple[int, ...] = (1,)


def default_fl_for(n_channels: int) -> tuple[int, ...]:
    """The fluorescence channels processed when none are given, for an acquisition of
    ``n_channels`` channels: PyAMA's :data:`DEFAULT_FL`, or none when the acquisition has a
    single channel (a phase-contrast-only recording, that channel being the phase contrast).

    Examples
    --------
    >>> default_fl_for(2), default_fl_for(1)
    ((1,), ())
    """
    return () if n_channels == 1 else DEFAULT_FL


@dataclass(frozen=True)
class Channels:
    """Which channels of the acquisition to process, with PyAMA's names.

    ``pc`` is the phase-contrast channel (segmented), ``fl`` the fluorescence channels
    (background-corrected and measured). ``fl`` empty is a phase-contrast-only run: cells are
    segmented and tracked, nothing is measured. ``pc`` is None only where a results file
    written by another tool names none.
    """

    pc: int | None = 0
    fl: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.pc is not None:
            object.__setattr__(self, "pc", int(self.pc))
        object.__setattr__(self, "fl", tuple(int(c) for c in self.fl))
        if self.pc in self.fl:
            raise ParamsError(
                f"channel {self.pc} is given both as phase contrast and as fluorescence"
            )
        if len(set(self.fl)) != len(self.fl):
            raise ParamsError(f"fluorescence channels repeat: {list(self.fl)}")

    @property
    def all(self) -> tuple[int, ...]:
        return (*(() if self.pc is None else (self.pc,)), *self.fl)


def parse_fovs(spec: str | Sequence[int], n_fovs: int) -> list[int]:
    """FOV indices from PyAMA's range syntax (``"0-5, 7"``) or a list of ints.

    Ranges are inclusive, as in PyAMA's samples files. Duplicates are removed and the result is
    sorted. Raises ``ValueError`` on malformed text and ``IndexError`` on FOVs outside
    ``0..n_fovs-1``.
    """
    if isinstance(spec, str):
        fovs: set[int] = set()
        for part in filter(None, (p.strip() for p in spec.split(","))):
            lo, sep, hi = part.partition("-")
            try:
                start, end = int(lo), int(hi) if sep else int(lo)
            except ValueError:
                raise ValueError(
                    f"bad FOV range {part!r} in {spec!r}; write e.g. '0-5, 7'"
                ) from None
            if end < start:
                raise ValueError(f"bad FOV range {part!r}: end before start")
            if end >= n_fovs:  # before expanding: "0-3000000000" would fill the memory
                lo = max(start, n_fovs)
                shown = list(range(lo, end + 1)) if end - lo < 10 else f"{lo}-{end}"
                raise IndexError(
                    f"FOV(s) {shown} outside the acquisition, which has {n_fovs} FOV(s) "
                    f"(0-{n_fovs - 1})"
                )
            fovs.update(range(start, end + 1))
    else:
        fovs = {int(f) for f in spec}
    if not fovs:
        raise ValueError(f"no FOVs selected by {spec!r}")
    outside = sorted(f for f in fovs if not 0 <= f < n_fovs)
    if outside:
        raise IndexError(
            f"FOV(s) {outside} outside the acquisition, which has {n_fovs} FOV(s) (0-{n_fovs - 1})"
        )
    return sorted(fovs)


def select_fovs(
    n_fovs: int, fov_start: int = -1, fov_end: int = -1, fovs: str | Sequence[int] | None = None
) -> list[int]:
    """PyAMA's FOV selection: an explicit ``fovs`` spec wins; else the inclusive range
    ``fov_start..fov_end`` where -1 means the first / the last FOV."""
    if fovs is not None:
        return parse_fovs(fovs, n_fovs)
    for name, value in (("fov_start", fov_start), ("fov_end", fov_end)):
        if value < -1:
            raise ValueError(f"{name} must be a FOV index or -1 (the first/last), got {value}")
    start = 0 if fov_start < 0 else fov_start
    end = n_fovs - 1 if fov_end < 0 else fov_end
    return parse_fovs(f"{start}-{end}", n_fovs)


def select_stages(stages: Sequence[str] | None) -> list[str]:
    """The stages to run, in pipeline order; None means all of them.

    Raises
    ------
    ParamsError
        On an unknown name (checked before any work starts) or an empty selection.

    Examples
    --------
    >>> select_stages(["segment", "copy"])
    ['copy', 'segment']
    """
    if stages is None:
        return list(STAGES)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ParamsError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
    if not stages:
        raise ParamsError(f"no stage selected; give some of {', '.join(STAGES)}")
    return [s for s in STAGES if s in stages]


def check_counts(
    batch_size: int | None = None, n_workers: int | None = None, retries: int | None = None
) -> None:
    """Refuse a batch size or worker count below 1 and negative retries (ParamsError)."""
    for name, value, least in (("batch_size", batch_size, 1), ("n_workers", n_workers, 1)):
        if value is not None and value < least:
            raise ParamsError(f"{name} must be at least {least}, got {value}")
    if retries is not None and retries < 0:
        raise ParamsError(f"retries must be 0 or more, got {retries}")
