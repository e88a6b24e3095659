"""W&B around Lightning's WandbLogger: offline by default, one run per job, always finished.

Everything here uses W&B's own environment variables, so a user's settings win:
``WANDB_MODE=online`` (or being logged in) makes runs live with no code change.
"""

from __future__ import annotations

import netrc
import os
import sys
from urllib.parse import urlparse

# Where W&B Launch keeps job inputs staged for the next ``wandb.init`` (a singleton in this module).
LAUNCH_INPUTS_MODULE = "wandb.sdk.launch.inputs.internal"


def logged_in() -> bool:
    """True when W&B has credentials: ``WANDB_API_KEY`` or a netrc entry for its host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def configure_run(run_name: str, group: str | None, resume_id: str | None = None) -> None:
    """Set W&B's defaults for this job: offline unless chosen otherwise, its name and sweep group,
    and the id of the W&B run to continue when the job resumes a recorded run."""
    if "WANDB_MODE" not in os.environ and not logged_in():
        os.environ["WANDB_MODE"] = "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ["WANDB_NAME"] = run_name
    if group:
        os.environ["WANDB_RUN_GROUP"] = group
    else:
        os.environ.pop("WANDB_RUN_GROUP", None)
    if resume_id:
        os.environ.update(WANDB_RUN_ID=resume_id, WANDB_RESUME="allow")
    else:
        os.environ.pop("WANDB_RUN_ID", None)
        os.environ.pop("WANDB_RESUME", None)


def finish_run(exit_code: int) -> None:
    """Finish the active W&B run, if any. Lightning's ``WandbLogger.finalize`` does not, and a
    later job in the same process would otherwise silently log into this run."""
    import sys

    wandb = sys.modules.get("wandb")  # never import wandb just to learn nothing was logged
    if wandb is not None and wandb.run is not None:
        try:
            wandb.finish(exit_code=exit_code)
        except (ConnectionError, OSError) as exc:
            # An interrupted job (SLURM requeue, kill) may have lost W&B's service process: the
            # offline log is already on disk, and the job's own outcome must not be masked.
            import logging

            logging.getLogger("expkit").warning("W&B could not finish the run cleanly: %s", exc)


def skip_launch_import_when_nothing_staged() -> None:
    """Stop ``wandb.init`` importing W&B Launch just to find no job inputs staged: about 0.45 s of
    every run's start-up.

    At the end of ``wandb.init`` W&B applies the job inputs W&B Launch staged on a singleton in
    ``LAUNCH_INPUTS_MODULE`` (wandb#7496). Importing that module imports the Launch agent, W&B's
    public API and their pydantic models, whose docstring extraction calls ``inspect.getmodule``
    and so scans ``sys.modules``, which torch and Lightning make large (wandb#10898). Inputs can
    only have been staged if that module was imported, so without it there is nothing to apply;
    with it, W&B's own code runs unchanged. Idempotent; a no-op on a W&B without that hook.
    """
    from wandb.sdk.wandb_run import Run

    original = getattr(Run, "_detect_and_apply_job_inputs", None)
    if original is None or getattr(original, "skips_unstaged", False):
        return

    def apply_staged_job_inputs(self) -> None:
        if LAUNCH_INPUTS_MODULE in sys.modules:
            original(self)

    apply_staged_job_inputs.skips_unstaged = True
    Run._detect_and_apply_job_inputs = apply_staged_job_inputs
