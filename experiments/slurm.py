"""What a SLURM sweep would submit, rendered without a cluster.

``render(launcher, n_jobs)`` takes the composed ``hydra.launcher`` config (conf/hydra/launcher/
slurm*.yaml on top of hydra-submitit-launcher's schema) and goes through the same steps as the
launcher's ``launch``: the same parameter mapping onto a submitit executor, and submitit's own
sbatch writer for an array of ``n_jobs`` tasks. ``python -m experiments.sweep ... action=render``
prints it for a sweep's pending runs.
"""

from __future__ import annotations

from pathlib import Path

INIT_KEYS = ("submitit_folder", "max_num_timeout")


def executor_parameters(launcher: dict) -> tuple[dict, dict]:
    """(executor init parameters, update_parameters kwargs), as hydra-submitit maps them."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    params = {k: v for k, v in launcher.items() if k != "_target_"}
    init = {
        "folder": params.pop("submitit_folder"),
        "slurm_max_num_timeout": params.pop("max_num_timeout"),
    }
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    return init, {k if k in base else f"slurm_{k}": v for k, v in params.items()}


def render(launcher: dict, n_jobs: int, command: str = "python -u -m submitit.core._submit") -> str:
    """The sbatch script of an array of n_jobs tasks with these launcher settings."""
    import submitit

    init, update = executor_parameters(launcher)
    executor = submitit.AutoExecutor(cluster="slurm", **init)
    executor.update_parameters(**update)
    slurm = executor._executor
    slurm.parameters["map_count"] = n_jobs  # what map_array sets for an array job
    Path(init["folder"].replace("%j", "render")).mkdir(parents=True, exist_ok=True)
    return slurm._make_submission_file_text(command, "render")
