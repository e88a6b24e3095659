"""``expkit validate [-m] [-cd DIR] [-cn NAME] [overrides...]``: compose and check a config without
running anything.

    expkit validate model=cnn data=digits         # one job
    expkit validate -m model=mlp,cnn data=wine    # every job of a sweep
    expkit validate --config-dir my_conf model=mine
    expkit validate -cn eval ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt

It is the train (or ``-cn``) entry point's own Hydra app, so it takes the same flags and
overrides, with the run directory in a temporary folder that is removed afterwards and a task
that only validates (``expkit.config.validate``); a sweep is checked by the ``validate_sweep``
callback, which stops before any job starts. Exit code 0 when valid, 2 for a configuration error,
3 for missing or unreadable data or checkpoints.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig


def validate_job(cfg: DictConfig) -> None:
    """The task of ``expkit validate``: check ``cfg`` (no data built, no weights allocated)."""
    from hydra.core.hydra_config import HydraConfig

    from expkit.config.app import check_choices
    from expkit.config.compose import written_overrides
    from expkit.config.validate import describe_sizes, validate
    from expkit.errors import ExpkitError, exit_with

    hc = HydraConfig.get()
    try:
        check_choices(written_overrides(hc))
        sizes = validate(cfg, task=hc.job.config_name)
    except ExpkitError as exc:
        exit_with(exc)
    print(f"ok: 1 job of {hc.job.config_name} is valid" + (f" ({describe_sizes(sizes)})" if sizes else "") + ".")


def main(argv: Sequence[str] | None = None, name: str = "validate") -> Any:
    from hydra._internal.utils import get_args_parser

    from expkit.config.app import run_app

    args = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(args):
        print(__doc__)
        return None
    from expkit.config.app import check_flags

    sys.argv = [f"expkit-{name}", *args]
    check_flags()  # argparse's errors in one line (exit 2)
    parsed, _ = get_args_parser().parse_known_args(args)
    scratch = tempfile.mkdtemp(prefix="expkit-validate-")
    ours = [f"hydra.run.dir={scratch}", f"hydra.sweep.dir={scratch}", "hydra.output_subdir=null",
            "++hydra.callbacks.validate_sweep.only=true"]
    # After the user's overrides (argparse takes one run of positionals), but before a bare --info
    # ending the line, which would take the first of them as its value.
    cut = len(args) - 1 if args and args[-1] == "--info" else len(args)
    sys.argv = [f"expkit-{name}", *args[:cut], *ours, *args[cut:]]
    try:
        return run_app(parsed.config_name or "train", validate_job)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
