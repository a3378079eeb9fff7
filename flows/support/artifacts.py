"""Prefect artifacts and run names shared by the flows: keys and names that name the data,
figures the UI can show."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from io import BytesIO
from pathlib import Path

from PIL import Image

#: Width of the previews embedded in markdown artifacts: they live in Prefect's database.
PREVIEW_PX = 480


def artifact_key(name: str, kind: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) that names the data, so the
    dashboard's artifact list tells acquisitions and samples apart.

    Examples
    --------
    >>> artifact_key("Exp_2026-11 (day 2)", "fit-summary")
    'exp-2026-11-day-2-fit-summary'
    """
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "pyama"
    return f"{slug[:60]}-{kind}"


def named_after(parameter: str) -> Callable[[], str]:
    """A ``flow_run_name`` for ``@flow``: the file name in the run's ``parameter``, so the
    dashboard's run list names the acquisition instead of a random adjective-animal."""

    def name() -> str:
        from prefect.runtime import flow_run

        return Path(str(flow_run.parameters.get(parameter) or "run")).name

    return name


def png_preview(path: str | Path, width: int = PREVIEW_PX) -> str:
    """``data:image/png;base64,...`` of the PNG at ``path``, scaled down to ``width`` px: the
    Prefect UI renders such images inside markdown, while links to local files it cannot."""
    with Image.open(path) as image:
        image.thumbnail((width, width * 4))
        buffer = BytesIO()
        image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def figures_markdown(title: str, sections: Sequence[tuple[str, Sequence[str]]]) -> str:
    """A markdown page: one heading per section, each figure embedded and its file named."""
    lines = [f"# {title}", ""]
    for heading, figures in sections:
        lines += [f"## {heading}", ""]
        for figure in figures:
            lines += [f"![{Path(figure).name}]({png_preview(figure)})", "", f"`{figure}`", ""]
    return "\n".join(lines)
