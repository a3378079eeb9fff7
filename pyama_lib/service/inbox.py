"""The inbox: where microscopes drop acquisitions, and how PyAMA Flow tells when one is done.

An acquisition in the inbox is a file (ND2, OME-TIFF) or a sequence folder (a folder of TIFF
images, a Micro-Manager dataset: :mod:`~pyama_lib.service.inbox_folders`). It is processed once
per version. A version is the resolved path, size and modification time (:class:`FileVersion`;
a folder's: the total size of its files and the latest time among them and its folders): a file
replaced by a new one, an image added to a folder, is new. It is *complete* when it has stopped
changing for a quiet period AND opens cleanly: an ND2 that is still being written has no chunk
map at its end, an OME-TIFF whose planes run past the end of the file is refused by the reader,
and so is a sequence with an image missing or unreadable, so none is taken for finished.

Paths that arrive from outside (an event, a sweep) are accepted only inside the configured
inbox roots, after symlinks are resolved (:func:`resolve_in_inbox`); the outputs go to a folder
under the output root that mirrors the acquisition's place in its inbox
(:func:`output_folder`). Once an acquisition's work has finished, ``<out>/inbox.yaml`` records
which version was processed (:func:`record_processed`), so an event delivered twice, or a
restarted service, finds the outputs complete and skips.

The watcher's memory of what it announced is :mod:`~pyama_lib.service.ledger`.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from pyama_lib.core.errors import InboxPathError, PathError, PyamaError
from pyama_lib.io import open_acquisition
from pyama_lib.io.atomic import atomic_write_text
from pyama_lib.io.plain import iso_time
from pyama_lib.io.readers.acquisition import acquisition_base_name
from pyama_lib.io.readers.bioio_files import BIOIO_SUFFIXES
from pyama_lib.service.inbox_folders import (
    folder_state,
    is_sequence_folder,
    search,
    sequence_holding,
)

#: The files the inbox treats as acquisitions (case-insensitive); CZI, LIF and DV need the
#: formats extra. Folders of TIFF images are acquisitions too (inbox_folders).
ACQUISITION_SUFFIXES = (".nd2", ".ome.tif", ".ome.tiff", *BIOIO_SUFFIXES)
#: Written into an acquisition's output folder once its work has finished.
PROCESSED_RECORD = "inbox.yaml"
#: Where the inbox service's runs find their configured folders (``pyama serve`` sets them;
#: a work pool's worker has them in its environment). Not run parameters: whoever can start
#: a run must not be able to widen the inbox.
INBOX_ENV, OUTPUT_ROOT_ENV = "PYAMA_INBOX", "PYAMA_OUTPUT_ROOT"


def configured_folders() -> tuple[list[str], str]:
    """The inbox folders (``$PYAMA_INBOX``, separated by ``os.pathsep``) and the output root
    (``$PYAMA_OUTPUT_ROOT``) of this process.

    Raises
    ------
    InboxPathError
        Either is unset or relative.
    """
    inbox = [f for f in os.environ.get(INBOX_ENV, "").split(os.pathsep) if f]
    output_root = os.environ.get(OUTPUT_ROOT_ENV, "")
    for name, value in [(INBOX_ENV, f) for f in inbox or [""]] + [(OUTPUT_ROOT_ENV, output_root)]:
        if not value or not Path(value).is_absolute():
            raise InboxPathError(
                Path(value or "."),
                f"${name} must name an absolute folder: run this deployment through "
                "`pyama serve`, or set it in the environment of the `prefect worker`",
            )
    return inbox, output_root


def is_acquisition(path: str | Path) -> bool:
    """Whether ``path`` names an acquisition file: ND2 or OME-TIFF, not hidden.

    Copy tools (rsync, robocopy, Finder) write to hidden temporary names first and rename at
    the end, so a hidden file is never an acquisition yet.

    Examples
    --------
    >>> is_acquisition("/data/exp1.ND2"), is_acquisition("/data/.exp1.nd2.XyZ12")
    (True, False)
    >>> is_acquisition("plate_3.ome.tiff"), is_acquisition("notes.txt")
    (True, False)
    """
    name = Path(path).name
    return not name.startswith(".") and name.lower().endswith(ACQUISITION_SUFFIXES)


def find_acquisitions(root: str | Path) -> list[Path]:
    """Every acquisition under ``root``: files and sequence folders (sub-folders included,
    hidden ones and the insides of sequence folders skipped), sorted, in one walk. Symlinked
    files are listed as they are (:func:`resolve_in_inbox` decides on them); symlinked folders
    are not searched."""
    return sorted(search(Path(root), is_acquisition))


def acquisition_holding(
    path: str | Path, root: str | Path, known: dict[Path, bool] | None = None
) -> Path | None:
    """The acquisition ``path`` (under the inbox folder ``root``) is or belongs to: the
    sequence folder holding it, else ``path`` when it is an acquisition file, else None.
    ``known`` keeps the answers about folders between calls.

    Examples
    --------
    >>> acquisition_holding("/inbox/day/exp1.nd2", "/inbox"), acquisition_holding("/inbox/a.txt", "/inbox")
    (PosixPath('/inbox/day/exp1.nd2'), None)
    """  # noqa: E501
    path, root = Path(path), Path(root)
    holding = sequence_holding(path, root, known)
    if holding is not None:
        return holding
    return path if is_acquisition(path) else None


@dataclass(frozen=True)
class FileVersion:
    """One version of an acquisition: resolved ``path``, ``size`` in bytes, ``mtime_ns`` (for
    a folder, the total size of its visible files and the latest time among them and its
    folders)."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | Path) -> FileVersion:
        """The version of the file or sequence folder at ``path`` now (symlinks resolved)."""
        resolved = Path(path).resolve()
        st = resolved.stat()
        if stat.S_ISDIR(st.st_mode):
            state = folder_state(resolved)
            return cls(str(resolved), state.size, state.mtime_ns)
        return cls(str(resolved), int(st.st_size), int(st.st_mtime_ns))

    @property
    def label(self) -> str:
        """``"<size>:<mtime_ns>"``: the version's identity at its path, as a run's label.

        Examples
        --------
        >>> FileVersion("/inbox/exp1.nd2", 1200, 1764583200000000000).label
        '1200:1764583200000000000'
        """
        return f"{self.size}:{self.mtime_ns}"

    def describe(self) -> str:
        """``"/inbox/exp1.nd2 (12.3 MB, modified 2026-12-01T10:00:00+00:00)"``"""
        return f"{self.path} ({self.size / 1e6:.1f} MB, modified {iso_time(self.mtime_ns / 1e9)})"


def _roots(inbox: str | Path | Sequence[str | Path]) -> list[Path]:
    items = [inbox] if isinstance(inbox, str | Path) else list(inbox)
    return [Path(r).expanduser().resolve() for r in items]


def resolve_in_inbox(
    path: str | Path, inbox: str | Path | Sequence[str | Path]
) -> tuple[Path, Path]:
    """``path`` with symlinks resolved, and the inbox root that holds it.

    Nothing is read from a refused path: the check looks at names only (a folder's listing
    tells whether it is a sequence folder).

    Raises
    ------
    InboxPathError
        ``path`` is relative, or resolves (through ``..`` or a symlink) outside every root,
        or does not exist, or is neither an acquisition file nor a sequence folder, or lies
        inside a sequence folder (its images belong to that folder).

    Examples
    --------
    >>> import tempfile
    >>> inbox = Path(tempfile.mkdtemp())
    >>> _ = (inbox / "exp1.nd2").write_bytes(b"")
    >>> resolve_in_inbox(inbox / "exp1.nd2", inbox)[0].name
    'exp1.nd2'
    >>> resolve_in_inbox("/etc/passwd", inbox)
    Traceback (most recent call last):
    ...
    pyama_lib.core.errors.InboxPathError: /etc/passwd: is outside the inbox ...
    """
    roots = _roots(inbox)
    given = Path(path)
    where = ", ".join(map(str, roots))
    if not given.is_absolute():
        raise InboxPathError(given, f"is not an absolute path; give the full path in {where}")
    try:
        resolved = given.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop (RuntimeError before
        # Python 3.13), a NUL byte (ValueError)
        raise InboxPathError(given, f"cannot be resolved ({exc}); refused") from None
    # the deepest root holding the file: the output folder must not depend on their order
    for root in sorted(roots, key=lambda r: len(r.parts), reverse=True):
        if resolved.is_relative_to(root):
            break
    else:
        via = f" (it resolves to {resolved})" if resolved != given else ""
        raise InboxPathError(given, f"is outside the inbox {where}{via}; refused, nothing read")
    parts = resolved.relative_to(root).parts
    if any(part.startswith(".") for part in parts[:-1]):
        # the watcher and the sweep skip hidden folders (copy tools' staging areas): so do events
        raise InboxPathError(given, "is inside a hidden folder of the inbox; refused")
    if not parts:
        raise InboxPathError(
            given, "is the inbox folder itself; put each acquisition in a folder of its own"
        )
    holding = sequence_holding(resolved.parent, root) if len(parts) > 1 else None
    if holding is not None:
        raise InboxPathError(
            given, f"lies inside the sequence folder {holding}; give that folder; refused"
        )
    if resolved.is_dir():
        if not is_sequence_folder(resolved):
            raise InboxPathError(
                given,
                "is a folder holding no TIFF images (nor Micro-Manager position folders with "
                "TIFFs and metadata.txt), not a file; refused",
            )
        return resolved, root
    if not is_acquisition(resolved):
        raise InboxPathError(
            given, "is not an ND2 or OME-TIFF acquisition, nor a folder of TIFF images; refused"
        )
    if not resolved.is_file():
        raise InboxPathError(given, "does not exist (any more) or is not a file")
    return resolved, root


def pin_in_inbox(acquisition: Path, root: Path) -> tuple[int, int]:
    """``(st_dev, st_ino)`` of the file or sequence folder :func:`resolve_in_inbox` checked,
    reached from ``root`` one folder at a time without following any symlink, so that what is
    pinned is inside the inbox even if a folder was swapped for a symlink since the check.
    Readers given it as their ``pinned`` option refuse any other (a path opened again later may
    lead elsewhere).

    Raises
    ------
    InboxPathError
        A folder or the file on the way is now a symlink, or is gone, or is neither a file nor
        a folder.
    """
    parts = acquisition.relative_to(root).parts
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
        # O_NONBLOCK: a FIFO planted under the name must not hang the open. Nothing is read.
        # A sequence folder opens with the same flags (O_RDONLY opens a directory).
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
        file_fd = os.open(parts[-1], flags, dir_fd=fd)
        try:
            st = os.fstat(file_fd)
        finally:
            os.close(file_fd)
    except OSError as exc:
        raise InboxPathError(
            acquisition,
            f"changed while it was checked ({exc.strerror or exc}: a folder on its way may have "
            "been replaced by a symlink); refused, nothing read",
        ) from None
    finally:
        os.close(fd)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise InboxPathError(
            acquisition, "is neither a regular file nor a folder; refused, nothing read"
        )
    return st.st_dev, st.st_ino


def output_folder(acquisition: Path, root: Path, output_root: str | Path) -> Path:
    """``<output_root>/<sub-folders of the inbox>/<base name>``: outputs mirror the inbox (a
    sequence folder's base name is its name).

    Examples
    --------
    >>> output_folder(Path("/inbox/2026-12-01/exp1.nd2"), Path("/inbox"), "/results")
    PosixPath('/results/2026-12-01/exp1')
    """
    relative = acquisition.relative_to(root).parent
    return Path(output_root).expanduser().absolute() / relative / acquisition_base_name(acquisition)


def not_ready(
    path: str | Path,
    quiet_seconds: float,
    unchanged_for: float | None = None,
    pinned: tuple[int, int] | None = None,
) -> str | None:
    """None when the acquisition at ``path`` is complete, else why it is not yet.

    ``unchanged_for`` is how long a watcher has seen its version (:class:`FileVersion`)
    unchanged; by default the age of its modification time. Below ``quiet_seconds`` it is
    still being written; after that it must open cleanly with PyAMA Flow's reader (as the file
    or folder ``pinned`` names, when given: :func:`pin_in_inbox`), and a sequence folder's every
    image must read as one image of the sequence's shape (``check_files``, one header per file).

    Raises
    ------
    InboxPathError
        The reader found another file or folder than the one pinned, or a sequence folder
        holds symlinks (an image must be in the folder, not lead out of the inbox).
    """
    if unchanged_for is None and quiet_seconds > 0:
        unchanged_for = time.time() - FileVersion.of(path).mtime_ns / 1e9
    if unchanged_for is not None and unchanged_for < quiet_seconds:
        quiet = f"{max(unchanged_for, 0):.0f} of {quiet_seconds:g} s"
        return f"still being written (unchanged for {quiet})"
    if Path(path).is_dir():
        _refuse_symlinks(Path(path))
    options = {} if pinned is None else {"pinned": pinned}
    try:
        with open_acquisition(path, **options) as acquisition:
            try:
                acquisition.check_files()
            except PyamaError as exc:
                return f"an image does not read yet: {_problem(exc, Path(path))}"
            return None
    except InboxPathError:
        raise
    except PyamaError as exc:
        return f"does not open yet: {_problem(exc, Path(path))}"
    except OSError as exc:
        return f"cannot be read yet: {exc}"


def _problem(exc: PyamaError, acquisition: Path) -> str:
    """The error's problem, preceded by the image it is about when that is one file of a
    sequence folder (the reason names the acquisition already)."""
    if not isinstance(exc, PathError):
        return str(exc)
    if exc.path != acquisition and exc.path.is_relative_to(acquisition):
        return f"{exc.path.relative_to(acquisition).as_posix()} {exc.problem}"
    return exc.problem


def _refuse_symlinks(folder: Path) -> None:
    """Refuse a sequence folder holding symlinks: the reader opens its images by name, and a
    symlinked image could lead out of the inbox."""
    try:
        links = folder_state(folder).symlinks
    except OSError:  # gone: the open that follows says so
        return
    if links:
        shown = ", ".join(links[:3]) + (" …" if len(links) > 3 else "")
        raise InboxPathError(
            folder,
            f"holds {len(links)} symlink(s) ({shown}); a sequence folder must hold the images "
            "themselves: copy them in instead of linking them; refused",
        )


# -- what was processed -------------------------------------------------------------------


def record_processed(out_dir: str | Path, version: FileVersion, **details: Any) -> Path:
    """Write ``<out_dir>/inbox.yaml``: ``version`` was processed into this folder (written last,
    atomically, so a killed run never leaves it)."""
    path = Path(out_dir) / PROCESSED_RECORD
    record = {**asdict(version), "processed": iso_time(), **details}
    atomic_write_text(path, yaml.safe_dump(record, sort_keys=False))
    return path


def is_processed(out_dir: str | Path, version: FileVersion) -> bool:
    """Whether ``<out_dir>/inbox.yaml`` says this very version was processed there."""
    try:
        record = yaml.safe_load((Path(out_dir) / PROCESSED_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):  # missing, not UTF-8, not YAML
        return False
    if not isinstance(record, dict):
        return False
    return all(record.get(k) == v for k, v in asdict(version).items())
