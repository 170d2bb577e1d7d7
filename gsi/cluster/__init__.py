"""Cluster glue: SLURM sweeps, serving a role over HTTP, sweep preview, in-process sweep jobs."""
