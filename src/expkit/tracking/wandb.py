"""W&B around Lightning's WandbLogger: offline by default, one run per job, always finished.

Everything here uses W&B's own environment variables, so a user's settings win:
``WANDB_MODE=online`` (or being logged in) makes runs live with no code change.
"""

from __future__ import annotations

import netrc
import os
from urllib.parse import urlparse


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
