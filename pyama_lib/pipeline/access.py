"""Can this process read a run's input and write its output folder? Asked on every worker of
a cluster before any stage runs.

On a cluster the stages open the input from its path and write the store into the output folder
on whichever host runs them, so both must be on a filesystem every host sees, under the same
path. A path that exists only on the submitting machine (a local disk, another mount point) or
a share mounted read-only on one host is the most common cluster set-up mistake; found here, it
fails the run before anything is written, naming the host.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import TypedDict


class Access(TypedDict):
    """What one host found: its name and one sentence per problem (none: all is well)."""

    host: str
    problems: list[str]


def probe_access(input_path: str | Path, output_dir: str | Path) -> Access:
    """Try what a stage does first: read the input, create a file in the output folder.

    Parameters
    ----------
    input_path : str or Path
        The acquisition file (or folder) the stages open.
    output_dir : str or Path
        The output folder, already created by the run (a probe file is written there and
        removed).

    Returns
    -------
    Access
        This host's name and its problems, ``[]`` when it can do both.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> probe_access(folder + "/missing.nd2", folder)["problems"]  # doctest: +ELLIPSIS
    ['cannot read the input .../missing.nd2: No such file or directory']
    >>> probe_access(folder, folder + "/nowhere")["problems"]  # doctest: +ELLIPSIS
    ['the output folder .../nowhere does not exist here (not on a filesystem this host shares?)']
    """
    problems = [_read_problem(Path(input_path)), _write_problem(Path(output_dir))]
    return {"host": socket.gethostname(), "problems": [p for p in problems if p]}


def _read_problem(path: Path) -> str | None:
    try:
        if path.is_dir():
            os.listdir(path)
        else:
            with path.open("rb") as f:
                f.read(1)
    except OSError as exc:
        return f"cannot read the input {path}: {exc.strerror or exc}"
    return None


def _write_problem(folder: Path) -> str | None:
    if not folder.is_dir():
        return (
            f"the output folder {folder} does not exist here "
            "(not on a filesystem this host shares?)"
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".pyama-access-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"cannot write into the output folder {folder}: {exc.strerror or exc}"
    return None
