"""How the file names of a TIFF sequence carry its time, position, channel and Z indices.

A microscope that saves one 2-D TIFF per image writes the indices into the names. Recognised
without configuration:

- NIS-Elements exports: ``<prefix>t<T>xy<P>c<C>z<Z>.tif``, the tokens at the end of the name in
  any order, with or without leading zeros, each optional (``exp_t001xy1c2.tif``).
- Micro-Manager's one-file-per-image folders: ``img_channel<C>_position<P>_time<T>_z<Z>.tif``
  (Micro-Manager 2) and ``img_<T>_<channel name>_<Z>.tif`` (1.4).

Any other naming is described with a pattern (:func:`pattern_naming`): the literal name with
``{t}``, ``{p}``, ``{c}`` and ``{z}`` where the indices are and ``*`` for anything, e.g.
``"run_{p}_frame{t}_{c}.tif"``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pyama_lib.core.errors import UnsupportedFormatError

AXES = ("P", "T", "C", "Z")

_NIS_TOKEN = re.compile(r"[_\-]?(xy|t|c|z)(\d+)$", re.IGNORECASE)
_NIS_AXIS = {"xy": "P", "t": "T", "c": "C", "z": "Z"}
_MM2 = re.compile(
    r"^img_channel(?P<C>\d+)_position(?P<P>\d+)_time(?P<T>\d+)_z(?P<Z>\d+)$", re.IGNORECASE
)
_MM14 = re.compile(r"^img_(?P<T>\d{9})_(?P<C>.+)_(?P<Z>\d{3})$", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\{([tpcz])\}|\*", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedName:
    """One file's indices as written in its name (strings: a channel may be named), and the
    rest of the name, which every file of one acquisition shares."""

    indices: dict[str, str]
    prefix: str


@dataclass(frozen=True)
class Naming:
    """A naming scheme: its name (for ``pyama info``) and how it reads one file name."""

    name: str
    regex: re.Pattern[str] | None = None  # None: NIS-Elements' trailing tokens

    def parse(self, file_name: str) -> ParsedName | None:
        """The indices in ``file_name`` (suffix included), or None when it does not match.

        Examples
        --------
        >>> NIS.parse("2014_05_30_controlagaint007xy1c2.tif")
        ParsedName(indices={'C': '2', 'P': '1', 'T': '007'}, prefix='2014_05_30_controlagain')
        >>> MICRO_MANAGER_2.parse("img_channel001_position000_time000000004_z000.tif").indices
        {'C': '001', 'P': '000', 'T': '000000004', 'Z': '000'}
        >>> pattern_naming("run_{p}_frame{t}_{c}.tif").parse("run_A1_frame3_GFP.tif").indices
        {'P': 'A1', 'T': '3', 'C': 'GFP'}
        """
        if self.regex is None:
            return _parse_nis(file_name)
        match = self.regex.match(file_name if self.name == "pattern" else _stem(file_name))
        if match is None:
            return None
        indices = {k: v for k, v in match.groupdict().items() if v is not None}
        return ParsedName(indices, "")


NIS = Naming("NIS-Elements export (…t<T>xy<P>c<C>z<Z>.tif)")
MICRO_MANAGER_2 = Naming(
    "Micro-Manager (img_channel<C>_position<P>_time<T>_z<Z>.tif, metadata.txt)", _MM2
)
MICRO_MANAGER_14 = Naming("Micro-Manager 1.4 (img_<T>_<channel>_<Z>.tif, metadata.txt)", _MM14)
BUILT_IN = (MICRO_MANAGER_2, MICRO_MANAGER_14, NIS)


def pattern_naming(pattern: str) -> Naming:
    """A :class:`Naming` from a user's pattern: ``{t}``, ``{p}``, ``{c}``, ``{z}`` stand for
    indices (digits, or a name such as ``GFP``), ``*`` for anything, the rest is literal.

    Raises
    ------
    UnsupportedFormatError
        The pattern has no ``{t}``, or names an index twice.
    """
    parts, seen, pos = [], set(), 0
    for m in _PLACEHOLDER.finditer(pattern):
        parts.append(re.escape(pattern[pos : m.start()]))
        if m.group(0) == "*":
            parts.append(".*?")
        else:
            axis = "P" if m.group(1).lower() == "p" else m.group(1).upper()
            if axis in seen:
                raise UnsupportedFormatError(Path(pattern), f"names {{{m.group(1)}}} twice")
            seen.add(axis)
            parts.append(rf"(?P<{axis}>[^/\\_.\-]+?)")
        pos = m.end()
    parts.append(re.escape(pattern[pos:]))
    if "T" not in seen:
        raise UnsupportedFormatError(
            Path(pattern),
            "a sequence pattern needs {t} where the time index is, e.g. 'exp_t{t}_c{c}.tif'",
        )
    return Naming("pattern", re.compile("^" + "".join(parts) + "$", re.IGNORECASE))


def choose_naming(names: Sequence[str]) -> Naming | None:
    """The built-in scheme that reads the most names (the others are reported as foreign),
    else None.

    NIS-Elements' tokens must give a time index, so that a folder of unrelated TIFFs whose names
    happen to end in ``c1`` is not taken for a time-lapse.
    """
    best, best_count = None, 0
    for naming in BUILT_IN:
        parsed = (naming.parse(n) for n in names)
        count = sum(1 for p in parsed if p is not None and "T" in p.indices)
        if count > best_count:
            best, best_count = naming, count
    return best


def natural_key(name: str) -> list[object]:
    """Sort key comparing digit runs as numbers: ``Pos2`` before ``Pos10``, ``A2`` before
    ``A10``.

    Examples
    --------
    >>> sorted(["xy10", "xy2", "B1", "A10", "A2"], key=natural_key)
    ['A2', 'A10', 'B1', 'xy2', 'xy10']
    """
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _stem(file_name: str) -> str:
    lower = file_name.lower()
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if lower.endswith(suffix):
            return file_name[: -len(suffix)]
    return file_name


def _parse_nis(file_name: str) -> ParsedName | None:
    rest, indices = _stem(file_name), {}
    while (m := _NIS_TOKEN.search(rest)) is not None:
        axis = _NIS_AXIS[m.group(1).lower()]
        if axis in indices:
            break  # "t1c1t2": the earlier t is part of the name, not an index
        indices[axis] = m.group(2)
        rest = rest[: m.start()]
    return ParsedName(dict(sorted(indices.items())), rest) if indices else None
