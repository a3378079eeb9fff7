"""What the flows share: where stages run (task runners, the Dask cluster's checks), what a
run reports (summary, run record, artifacts, progress). Not flows themselves."""
