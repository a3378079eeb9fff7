"""process_acquisition on a real Dask cluster (separate worker processes) equals the thread run.

The cluster is started before the flow, as an existing cluster would be, and the flow is pointed
at its address. Its workers reach the test's Prefect API through the settings context that
prefect-dask sends with every task (the harness sets PREFECT_API_URL as a setting).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

# Hard dependencies (pyproject.toml): a broken install fails here, it is never skipped.
import distributed
import pandas as pd
import prefect_dask  # noqa: F401  (runner="dask" imports it lazily)

from flows.process import process_acquisition
from pyama_lib.synthetic.generator import make_synthetic

N_FOVS, N_FRAMES, N_CELLS = 2, 32, 4
STAGES = ("copy", "segment", "correct", "track", "extract")


def _traces(out: Path, fov: int) -> pd.DataFrame:
    return pd.read_csv(out / f"fov_{fov:03d}" / f"synthetic_fov_{fov:03d}_traces_ch_1.csv")


def test_dask_cluster_run_matches_thread_run(prefect_api, tmp_path: Path) -> None:
    info = make_synthetic(
        tmp_path / "in",
        n_fovs=N_FOVS,
        n_frames=N_FRAMES,
        size=128,
        n_cells=N_CELLS,
        write_labels=False,
    )
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",  # no fixed port: other runs may hold 8787
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        pids = client.run(os.getpid)  # {worker address: pid}
        assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
        with distributed.get_task_stream(client) as stream:
            summary = process_acquisition(
                str(info.path),
                str(tmp_path / "dask"),
                runner="dask",
                dask_address=cluster.scheduler_address,
            )
    # every FOV stage ran as a task on the cluster's worker processes (keys: "<task>-<hash>");
    # which worker takes which task is the scheduler's choice, so only membership is asserted
    ran = sorted(rec["key"].rsplit("-", 1)[0] for rec in stream.data)
    assert ran == sorted(f"{stage}_fov" for stage in STAGES for _ in range(N_FOVS))
    assert {rec["worker"] for rec in stream.data} <= set(pids)
    assert summary.fovs_done == [0, 1]

    thread = process_acquisition(str(info.path), str(tmp_path / "thread"), runner="thread")
    assert thread.fovs_done == [0, 1]
    for fov in range(N_FOVS):
        by_dask, by_thread = _traces(tmp_path / "dask", fov), _traces(tmp_path / "thread", fov)
        assert by_dask["cell"].nunique() == N_CELLS
        assert len(by_dask) == N_CELLS * N_FRAMES
        pd.testing.assert_frame_equal(by_dask, by_thread)
    assert (tmp_path / "dask" / "processing_results.yaml").is_file()
    parquet = {
        name: pd.read_parquet(tmp_path / name / "traces.parquet")
        .sort_values(["fov", "cell", "frame"])
        .reset_index(drop=True)
        for name in ("dask", "thread")
    }
    assert len(parquet["dask"]) == N_FOVS * N_CELLS * N_FRAMES
    pd.testing.assert_frame_equal(parquet["dask"], parquet["thread"])
