"""W&B around Lightning's WandbLogger: offline by default, one run per job, always finished.

Everything here uses W&B's own environment variables, so a user's settings win:
``WANDB_MODE=online`` (or being logged in) makes runs live with no code change.
"""

from __future__ import annotations

import netrc
import os
import sys
import threading
from urllib.parse import urlparse

# Where W&B Launch keeps job inputs staged for the next ``wandb.init`` (a singleton in this module).
LAUNCH_INPUTS_MODULE = "wandb.sdk.launch.inputs.internal"
# W&B releases on which skip_launch_import_when_nothing_staged is verified, each with the sha256 of
# its Run._detect_and_apply_job_inputs source (signature included). A new release is added only
# after reading that method and running tests/test_startup.py on it.
VERIFIED_LAUNCH_HOOK = {"0.31.0": "69ca17834fa9bdb40dac03c218df8e1ceaef118e7382bf3308decd10854a5473"}
# The service start begun by start_service_in_background, until wait_for_service joins it.
_service_start: threading.Thread | None = None


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
    """Stop ``wandb.init`` importing W&B Launch just to find no job inputs staged: 0.5-1 s of every
    tracked run's start-up with W&B 0.31 (``benchmarks/results/startup_savings.md``), without which
    training would not start within 1 s of the unavoidable imports.

    At the end of ``wandb.init`` W&B applies the job inputs W&B Launch staged on a singleton in
    ``LAUNCH_INPUTS_MODULE`` (wandb#7496). Importing that module imports the Launch agent, W&B's
    public API and their pydantic models, whose docstring extraction calls ``inspect.getmodule``
    and so scans ``sys.modules``, which torch and Lightning make large (wandb#10898). Inputs can
    only have been staged if that module was imported, so without it there is nothing to apply;
    with it, W&B's own code runs unchanged.

    This replaces a private method (``Run._detect_and_apply_job_inputs``), so it is done only on the
    W&B releases in ``VERIFIED_LAUNCH_HOOK``, whose method tests/test_startup.py checks has that
    exact source; on any other release W&B runs as it is. Idempotent.
    """
    import wandb
    from wandb.sdk.wandb_run import Run

    if wandb.__version__ not in VERIFIED_LAUNCH_HOOK:
        return  # not verified there: W&B's own behaviour
    original = Run._detect_and_apply_job_inputs
    if getattr(original, "skips_unstaged", False):
        return

    def apply_staged_job_inputs(self) -> None:
        if LAUNCH_INPUTS_MODULE in sys.modules:
            original(self)

    apply_staged_job_inputs.skips_unstaged = True
    apply_staged_job_inputs.__wrapped__ = original  # W&B's own, for the test that checks its source
    Run._detect_and_apply_job_inputs = apply_staged_job_inputs


def start_service_in_background() -> None:
    """Start W&B's service process in a background thread while the run's data and model are built
    (``wait_for_service`` joins it before the loggers are): about 0.2 s of every tracked run's start-up.

    ``wandb.init`` starts W&B's service (``wandb-core``) and polls for its port every 0.2 s, so it
    waits about 0.2 s doing nothing. ``wandb.setup()`` is W&B's documented way to start the service
    ahead of ``wandb.init``, which then uses it. It starts nothing when W&B is disabled
    (``WANDB_MODE=disabled``). An error is left for ``wandb.init`` to report. W&B is imported here,
    in the caller's thread: two threads importing one package at once can each see the other's
    half-initialised modules.
    """
    global _service_start
    import wandb

    def start() -> None:
        try:
            wandb.setup()
        except Exception:  # noqa: BLE001 - wandb.init starts the service again and reports the error
            pass

    _service_start = threading.Thread(target=start, name="expkit-wandb-service", daemon=True)
    _service_start.start()


def wait_for_service() -> None:
    """Join the service start begun by ``start_service_in_background``, if any; before anything
    else in the process uses W&B."""
    global _service_start
    if _service_start is not None:
        _service_start.join()
        _service_start = None

