"""Per-FOV orchestration over the store: plan, jobs, stages, completion, worker processes.

``processing/`` holds the pure array functions; this package applies them to one FOV of an
acquisition at a time, reading and writing the Zarr store. No Prefect here either: the tasks
in ``tasks/`` wrap :func:`run_stage`.
"""
