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
# Hydra overrides that choose how runs are launched: a sweep passes them on to its runs.
FORWARDED_HYDRA = ("hydra/launcher", "hydra.launcher", "hydra.sweeper")


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


def render_sweep(sweep_dir: Path, name: str, train: list[str], n_jobs: int) -> int:
    """Print the sbatch script the configured submitit launcher would submit (no cluster)."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from experiments.config import ConfigError

    user = [o for o in HydraConfig.get().overrides.hydra if o.startswith(FORWARDED_HYDRA)]
    if not any(o.startswith("hydra/launcher") for o in user):
        raise ConfigError(
            "action=render shows a SLURM submission: add hydra/launcher=slurm "
            "(or slurm_multigpu, or submitit_slurm)"
        )
    cfg = compose(
        "train",
        overrides=[*user, *train, f"hydra.sweep.dir={sweep_dir}"],
        return_hydra_config=True,
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    launcher["submitit_folder"] = f"{sweep_dir}/.submitit/%j"
    launcher["name"] = name
    try:
        print(render(launcher, n_jobs))
    except RuntimeError as e:  # submitit wants srun on PATH: a SLURM login node
        raise ConfigError(f"cannot render the submission here: {e}") from None
    print(
        f"# {n_jobs} array task(s); on timeout or pre-emption submitit requeues a task up to "
        f"{launcher.get('max_num_timeout', 0)} time(s), and the run resumes from its checkpoint"
    )
    return 0
