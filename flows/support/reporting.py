"""What a processing run reports: the summary object, the run-level files and the artifacts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from flows.support.artifacts import artifact_key
from pyama_lib.core.errors import PartialFailure
from pyama_lib.io.atomic import remove_leftover_temps
from pyama_lib.io.plain import iso_time
from pyama_lib.io.results_yaml import results_file_path, update_results_file
from pyama_lib.io.traces import PARQUET_DIR
from pyama_lib.pipeline.plan import Plan, check_output_owner
from pyama_lib.pipeline.run_record import RunRecord, write_run_yaml
from pyama_lib.pipeline.stages import results_entries
from pyama_lib.pipeline.superseded import set_aside_superseded


@dataclass
class FovSummary:
    """One FOV's outcome: ``status`` is done, skipped (every stage already complete) or failed."""

    fov: int
    status: str
    cells: dict[int, int] = field(default_factory=dict)
    rows: dict[int, int] = field(default_factory=dict)
    seconds: dict[str, float | str] = field(default_factory=dict)
    error: str | None = None
    sources: dict[int, str] = field(default_factory=dict)  # channel -> array measured


@dataclass
class ProcessSummary:
    """The small object ``process_acquisition`` returns."""

    input_path: str
    output_dir: str
    base_name: str
    stages: list[str]
    fovs: list[FovSummary]
    results_yaml: str
    parquet_dir: str
    run_yaml: str
    wall_seconds: float
    notes: list[str] = field(default_factory=list)  # e.g. that the run measured nothing

    def _with(self, status: str) -> list[int]:
        return [f.fov for f in self.fovs if f.status == status]

    @property
    def fovs_done(self) -> list[int]:
        return self._with("done")

    @property
    def fovs_skipped(self) -> list[int]:
        return self._with("skipped")

    @property
    def fovs_failed(self) -> list[int]:
        return self._with("failed")

    @property
    def errors(self) -> dict[int, str]:
        return {f.fov: f.error or "" for f in self.fovs if f.status == "failed"}

    def raise_if_failed(self) -> None:
        """One paragraph naming every failed FOV and the stage it failed in, for the CLI."""
        if not self.fovs_failed:
            return
        failed = "; ".join(f"fov_{f:03d} in {self.errors[f].rstrip('.')}" for f in self.fovs_failed)
        raise FovsFailedError(
            f"{len(self.fovs_failed)} FOV(s) failed: {failed}. The other FOVs are done; "
            "re-run the same command to retry the failed ones (completed stages are skipped).",
            self,
        )

    def table(self) -> list[dict[str, Any]]:
        """One row per FOV and fluorescence channel: status, cells, trace rows (of a run
        without fluorescence: of the phase-contrast channel's tracks table)."""
        rows = []
        for f in self.fovs:
            for ch in sorted(f.cells) or [None]:
                rows.append(
                    {
                        "fov": f.fov,
                        "channel": ch,
                        "status": f.status,
                        "cells": f.cells.get(ch, 0) if ch is not None else 0,
                        "trace_rows": f.rows.get(ch, 0) if ch is not None else 0,
                    }
                )
        return rows

    def __str__(self) -> str:
        head = f"{'fov':>5} {'ch':>3} {'status':<8} {'cells':>6} {'rows':>8}"
        lines = [head, "-" * len(head)]
        for r in self.table():
            ch = "-" if r["channel"] is None else r["channel"]
            lines.append(
                f"{r['fov']:>5} {ch:>3} {r['status']:<8} {r['cells']:>6} {r['trace_rows']:>8}"
            )
        lines.append(
            f"{len(self.fovs_done)} done, {len(self.fovs_skipped)} skipped, "
            f"{len(self.fovs_failed)} failed in {self.wall_seconds:.1f} s"
        )
        lines += self.notes
        return "\n".join(lines)


class FovsFailedError(PartialFailure):
    """Some FOVs failed, the others are done: ``summary`` is the run's :class:`ProcessSummary`
    (FOVs done, skipped and failed, cells, output paths), as a successful run returns it."""

    def __init__(self, message: str, summary: ProcessSummary) -> None:
        super().__init__(message)
        self.summary = summary

    def __reduce__(self) -> tuple[type, tuple[str, ProcessSummary]]:
        # Pickled when Prefect persists the failed state or the error crosses processes; the
        # default would call __init__(message) alone and fail.
        return (type(self), (str(self), self.summary))


def failed_fov(
    stage: str, exc: BaseException, completed: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """How a flow records a FOV whose ``stage`` task failed (read back by the summary).

    ``completed`` are the FOV's stage result dicts from before the failure: run.yaml keeps
    their timings, which tell how far the FOV got and what a re-run will skip.
    """
    return {"error": f"{stage}: {type(exc).__name__}: {exc}", "completed": list(completed or [])}


def _fov_summary(fov: int, outcome: Any) -> FovSummary:
    if isinstance(outcome, dict):  # a failed FOV, recorded by failed_fov()
        summary = FovSummary(fov, "failed", error=outcome["error"])
        stages = outcome.get("completed", [])
    else:
        summary = FovSummary(fov, "skipped")
        stages = outcome
    for stage in stages:
        if stage["written"]:
            if summary.status == "skipped":
                summary.status = "done"
            summary.seconds[stage["stage"]] = round(stage["seconds"], 3)
        else:
            summary.seconds[stage["stage"]] = "skipped"
        for ch, n in stage["info"].get("cells", {}).items():
            summary.cells[int(ch)] = n
        for ch, n in stage["info"].get("rows", {}).items():
            summary.rows[int(ch)] = n
        for ch, name in stage["info"].get("sources", {}).items():
            summary.sources[int(ch)] = name
    return summary


def start_run_record(
    plan: Plan, stages: list[str], started: float, settings: dict[str, Any] | None = None
) -> RunRecord:
    """Write the run's entry to run.yaml now, with status ``running``, and return it.

    A run that is killed leaves this entry (status still ``running``: the record says what was
    being done and since when); an interrupted or failed one updates it. ``settings`` (runner,
    n_workers, batch_size, retries, reader_options) go to run.yaml as given; inside a Prefect
    flow run its id is added as ``flow_run_id``, the link to the run's logs and task runs, and
    ``prefect_api``, the API that holds them (a command's temporary server is gone afterwards,
    but its database in ``PREFECT_HOME`` keeps them).
    """
    from prefect.settings import PREFECT_API_URL

    settings = dict(settings or {})
    if flow_run.id is not None:  # None outside a flow run (a script calling this directly)
        settings["flow_run_id"] = flow_run.id
        settings["prefect_api"] = PREFECT_API_URL.value()
    record = RunRecord(
        started=iso_time(started),
        parameters={**plan.describe(), "stages": stages},
        settings=settings,
        input=plan.input,
        warnings=list(plan.warnings),
    )
    write_run_yaml(record, plan.output_dir)
    return record


@contextmanager
def record_run(
    plan: Plan, stages: list[str], started: float, settings: dict[str, Any] | None = None
) -> Iterator[RunRecord]:
    """The run's run.yaml entry for the block: written at once (``running``), then marked
    ``interrupted`` (Ctrl-C, SIGTERM) or ``failed`` (an error) if the block ends that way
    before :func:`write_run_outputs` completed it.

    Call it holding the output folder's lock: the folder's owner is checked again first, as
    another acquisition's run may have taken the folder since this run was planned.
    """
    check_output_owner(plan.output_dir, plan.input, plan.base_name)
    if note := set_aside_superseded(plan):
        get_run_logger().warning("%s", note)
        plan.warnings.append(note)
    leftovers = remove_leftover_temps(plan.output_dir, older_than=started)
    if leftovers:
        get_run_logger().warning(
            "%s: removed %d temporary file(s) left by an interrupted run (e.g. %s)",
            plan.output_dir,
            len(leftovers),
            leftovers[0].name,
        )
    record = start_run_record(plan, stages, started, settings)
    try:
        yield record
    except BaseException as exc:
        if record.status == "running":
            # Ctrl-C, SIGTERM (Prefect's TerminationSignal), SystemExit: not an error of the run
            interrupted = not isinstance(exc, Exception)
            reason = str(exc) or type(exc).__name__
            record.finish(
                status="interrupted" if interrupted else "failed",
                summary={"reason": reason if not interrupted else f"interrupted ({reason})"},
            )
            write_run_yaml(record, plan.output_dir)
        raise


def write_run_outputs(
    plan: Plan,
    results: dict[int, Any],
    record: RunRecord,
    started: float,
) -> ProcessSummary:
    """Merge processing_results.yaml, complete the run's run.yaml entry, build the summary.

    ``record`` is the entry :func:`start_run_record` wrote; ``started`` when the run started
    (epoch seconds).
    """
    out = Path(plan.output_dir)
    stages = list(record.parameters["stages"])
    fovs = [_fov_summary(fov, results[fov]) for fov in sorted(results)]
    ok = [f.fov for f in fovs if f.status != "failed"]
    update_results_file(results_entries(plan, ok, record.run_id))
    for f in fovs:
        for stage, seconds in f.seconds.items():
            if seconds == "skipped":
                record.mark_skipped(f.fov, stage)
            else:
                record.record_timing(f.fov, stage, float(seconds))
    wall = time.time() - started
    summary = ProcessSummary(
        input_path=plan.input_path,
        output_dir=str(out),
        base_name=plan.base_name,
        stages=stages,
        fovs=fovs,
        results_yaml=str(results_file_path(out)),
        parquet_dir=str(out / PARQUET_DIR),
        run_yaml="",
        wall_seconds=wall,
        notes=list(plan.notes),
    )
    outcome: dict[str, Any] = {"table": summary.table(), "wall_seconds": round(wall, 3)}
    sources = {f.fov: f.sources for f in fovs if f.sources}
    if sources:  # which array each channel's traces measured: corrected, or raw (fallback)
        outcome["fl_sources"] = sources
    if plan.notes:
        outcome["notes"] = list(plan.notes)
    if summary.fovs_failed:  # the record says why, not only that, a FOV failed
        outcome["errors"] = summary.errors
    record.finish(status="failed" if summary.fovs_failed else "completed", summary=outcome)
    summary.run_yaml = str(write_run_yaml(record, out))
    return summary


def publish_artifacts(summary: ProcessSummary) -> None:
    """A table of cells and trace rows per FOV and a markdown page linking the outputs."""
    create_table_artifact(
        table=summary.table(),
        key=artifact_key(summary.base_name, "process-summary"),
        description=f"Cells and trace rows per FOV of {summary.base_name}",
    )
    create_markdown_artifact(
        key=artifact_key(summary.base_name, "process-outputs"),
        description=f"Outputs of {summary.base_name}",
        markdown="\n".join(
            [
                f"# {summary.base_name}",
                f"- input: `{summary.input_path}`",
                f"- output folder: `{summary.output_dir}`",
                f"- PyAMA results: `{summary.results_yaml}`",
                f"- traces (Parquet): `{summary.parquet_dir}`",
                f"- provenance: `{summary.run_yaml}`",
                f"- FOVs: {len(summary.fovs_done)} done, {len(summary.fovs_skipped)} skipped, "
                f"{len(summary.fovs_failed)} failed; stages {', '.join(summary.stages)}; "
                f"{summary.wall_seconds:.1f} s",
                "",
                "```",
                str(summary),
                "```",
            ]
        ),
    )
