"""``python -m experiments.sweep``: spec, planner, LR rule, launch and packing, a sweep's
folder (status, throughput), SLURM rendering."""
