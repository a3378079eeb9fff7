"""Samples YAML: which FOVs form which sample (condition), as PyAMA's merge reads it.

A samples file lists named groups of FOVs; ``fovs`` is a list of FOV indices or PyAMA's range
text (inclusive ranges separated by commas)::

    samples:
      - name: control
        fovs: "0-5, 7"
      - name: dox 1uM
        fovs: [8, 9, 10]

A sample's name becomes part of file names (``<sample>_<feature>_ch_<c>.csv``), so it must be
safe as one on Linux, macOS and Windows:

- ASCII letters, digits, ``-``, ``_``, ``.``, ``+`` and spaces only (no path separators, no
  ``:*?"<>|``, no control characters, no non-ASCII letters that some lab file servers mangle);
- starts with a letter or a digit (no hidden ``.name``, no ``-name`` that looks like a CLI option);
- does not end with a space or a dot (Windows silently drops them) and has no ``..``;
- at most :data:`MAX_NAME_LENGTH` characters.

Two samples may not share a name, compared case-insensitively, because macOS and Windows file
systems would make their files overwrite each other. Samples may share FOVs (PyAMA allows it).
An integer name (``name: 2024``, which YAML reads as a number) is taken as its text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pyama_lib.core.errors import ParamsError
from pyama_lib.core.selection import parse_fovs

MAX_NAME_LENGTH = 100
"""Longest sample name; leaves room for ``_<feature>_ch_<c>_fitted.csv`` within 255 bytes."""

_SAFE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._+ -]*[A-Za-z0-9_+-])?$")
_NAME_RULE = (
    "use ASCII letters, digits, '-', '_', '.', '+' and spaces, starting with a letter or digit "
    "and not ending with a space or dot"
)
# parse_fovs checks an upper bound; a samples file alone has none, so it gets one no
# acquisition reaches, which keeps a mistyped range from expanding into billions of FOVs.
MAX_SAMPLE_FOVS = 100_000


@dataclass(frozen=True)
class Sample:
    """A named group of FOVs.

    ``fovs`` is normalised to a sorted tuple of unique ints; the name is checked with
    :func:`check_sample_name`, so a ``Sample`` is always safe to build file names from.

    Examples
    --------
    >>> Sample("control", [3, 1, 1])
    Sample(name='control', fovs=(1, 3))
    """

    name: str
    fovs: tuple[int, ...]

    def __post_init__(self) -> None:
        check_sample_name(self.name)
        spec = self.fovs
        if isinstance(spec, str):
            spec = _parse_range(spec, f"sample {self.name!r}")
        fovs = tuple(sorted({int(f) for f in spec}))
        if not fovs:
            raise ParamsError(f"sample {self.name!r} has no FOVs")
        if fovs[0] < 0:
            raise ParamsError(f"sample {self.name!r}: FOV indices must be 0 or more, got {fovs}")
        object.__setattr__(self, "fovs", fovs)


def check_sample_name(name: Any) -> str:
    """Return ``name`` if it is safe as part of a file name, else raise ParamsError.

    Examples
    --------
    >>> check_sample_name("dox 1uM")
    'dox 1uM'
    >>> check_sample_name("../elsewhere")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pyama_lib.core.errors.ParamsError: sample name '../elsewhere' is not safe as a file name: ...
    """
    if not isinstance(name, str) or not name:
        raise ParamsError(f"sample name must be non-empty text, got {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise ParamsError(
            f"sample name {name[:20]!r}... is {len(name)} characters long; "
            f"keep it to {MAX_NAME_LENGTH}"
        )
    if not _SAFE_NAME.match(name) or ".." in name:
        raise ParamsError(f"sample name {name!r} is not safe as a file name: {_NAME_RULE}")
    return name


def format_fovs(fovs: Iterable[int]) -> str:
    """Write FOV indices in PyAMA's range syntax, the inverse of the samples file's ``fovs``.

    Examples
    --------
    >>> format_fovs([0, 1, 2, 3, 7, 9, 10])
    '0-3, 7, 9-10'
    """
    ordered = sorted({int(f) for f in fovs})
    runs: list[list[int]] = []
    for f in ordered:
        if runs and f == runs[-1][1] + 1:
            runs[-1][1] = f
        else:
            runs.append([f, f])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def load_samples(path: str | Path) -> list[Sample]:
    """Read a samples YAML file.

    Raises
    ------
    ParamsError
        If the file is missing or unreadable, or its content is refused by
        :func:`parse_samples`; the message starts with the file's path.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: samples file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"{path}: cannot read the samples file ({exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc})") from exc
    return parse_samples(data, source=str(path))


def parse_samples(data: Any, source: str = "samples") -> list[Sample]:
    """Samples from the loaded YAML structure ``{"samples": [{name, fovs}, ...]}``.

    Parameters
    ----------
    data
        What ``yaml.safe_load`` returned for the file.
    source
        Names the file in error messages.

    Raises
    ------
    ParamsError
        No ``samples`` list, a sample without a name or FOVs, a malformed FOV range, an unsafe
        name, or two samples with one name.

    Examples
    --------
    >>> parse_samples({"samples": [{"name": "a", "fovs": "0-2, 5"}, {"name": "b", "fovs": [3]}]})
    [Sample(name='a', fovs=(0, 1, 2, 5)), Sample(name='b', fovs=(3,))]
    """
    if not isinstance(data, Mapping) or "samples" not in data:
        raise ParamsError(
            f"{source}: no 'samples' list; write e.g. samples: [{{name: control, fovs: '0-5'}}]"
        )
    entries = data["samples"]
    if not isinstance(entries, list) or not entries:
        raise ParamsError(f"{source}: 'samples' must be a non-empty list of {{name, fovs}}")
    samples = [_parse_one(entry, i, source) for i, entry in enumerate(entries)]
    check_unique_names(samples, source)
    return samples


def _parse_one(entry: Any, index: int, source: str) -> Sample:
    where = f"{source}: sample #{index + 1}"
    if not isinstance(entry, Mapping):
        raise ParamsError(f"{where} is not a mapping with 'name' and 'fovs' (got {entry!r})")
    name = entry.get("name")
    if isinstance(name, int) and not isinstance(name, bool):
        name = str(name)
    if not isinstance(name, str) or not name.strip():
        raise ParamsError(f"{where} has no name; give it 'name: <text>'")
    where = f"{source}: sample {name!r}"
    try:
        check_sample_name(name)
    except ParamsError as exc:
        raise ParamsError(f"{source}: {exc}") from None
    spec = entry.get("fovs")
    if spec is None or spec == "" or spec == []:
        raise ParamsError(f"{where} has no FOVs; give e.g. fovs: '0-5, 7' or fovs: [0, 1]")
    return Sample(name, _parse_fovs(spec, where))


def _parse_fovs(spec: Any, where: str) -> tuple[int, ...]:
    if isinstance(spec, bool):
        raise ParamsError(f"{where}: fovs must be a list or a range like '0-5, 7', got {spec!r}")
    if isinstance(spec, int):
        spec = [spec]
    if isinstance(spec, str):
        return tuple(_parse_range(spec, where))
    if isinstance(spec, list):
        bad = [
            f
            for f in spec
            if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < MAX_SAMPLE_FOVS
        ]
        if bad:
            raise ParamsError(
                f"{where}: FOVs must be integers from 0 to {MAX_SAMPLE_FOVS - 1}, got {bad}"
            )
        return tuple(sorted(set(spec)))
    raise ParamsError(f"{where}: fovs must be a list or a range like '0-5, 7', got {spec!r}")


def check_unique_names(samples: Sequence[Sample], source: str = "samples") -> None:
    """Refuse two samples whose names differ only in case (their files would collide).

    Examples
    --------
    >>> check_unique_names([Sample("a", [0]), Sample("A", [1])], "s.yaml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pyama_lib.core.errors.ParamsError: s.yaml: two samples are named 'a' and 'A'; ...
    """
    seen: dict[str, str] = {}
    for sample in samples:
        key = sample.name.casefold()
        if key in seen:
            names = repr(sample.name)
            if seen[key] != sample.name:
                names = f"{seen[key]!r} and {sample.name!r}"
            raise ParamsError(
                f"{source}: two samples are named {names}; sample names must differ "
                "(ignoring case), since each names its output files"
            )
        seen[key] = sample.name


def check_fovs(
    samples: Sequence[Sample], available: Iterable[int], source: str = "samples"
) -> None:
    """Refuse samples that name FOVs the results do not have.

    Parameters
    ----------
    samples
        The samples to check.
    available
        FOVs with traces in the processing results.
    source
        Names the samples file (and, ideally, the results) in the message.

    Raises
    ------
    ParamsError
        Naming each offending sample, its missing FOVs and the FOVs there are.

    Examples
    --------
    >>> check_fovs([Sample("a", [0, 1])], available=[0, 1, 2])
    >>> check_fovs([Sample("a", [0, 4, 5])], [0, 1, 2], "s.yaml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pyama_lib.core.errors.ParamsError: s.yaml: sample 'a' names FOV(s) 4-5 that have no traces ...
    """
    have = {int(f) for f in available}
    problems = [
        f"sample {s.name!r} names FOV(s) {format_fovs(missing)}"
        for s in samples
        if (missing := sorted(set(s.fovs) - have))
    ]
    if problems:
        there = format_fovs(have) if have else "none"
        raise ParamsError(
            f"{source}: {'; '.join(problems)} that have no traces in the results "
            f"(FOVs with traces: {there}); fix the samples file or process those FOVs first"
        )


def _parse_range(spec: str, where: str) -> list[int]:
    try:
        return parse_fovs(spec, MAX_SAMPLE_FOVS)
    except ValueError as exc:
        raise ParamsError(f"{where}: {exc}") from None
    except IndexError:
        raise ParamsError(
            f"{where}: FOV range {spec!r} goes beyond FOV {MAX_SAMPLE_FOVS - 1}; "
            "no acquisition has that many FOVs (a typo?)"
        ) from None
