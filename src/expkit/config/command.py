"""``expkit validate [-m] [overrides...]``: compose and check a config without running anything.

    expkit validate model=cnn data=digits         # one job
    expkit validate -m model=mlp,cnn data=wine    # every job of a sweep
    expkit validate --config-name eval ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt

Exit code 0 when valid, 2 for a configuration error, 3 for missing or unreadable data/checkpoints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None, name: str = "validate") -> None:
    parser = argparse.ArgumentParser(
        prog=f"expkit {name}",
        description="Compose the config with the overrides and check it as `expkit train` would, "
        "without building datasets or models.",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=cnn trainer.max_epochs=5")
    parser.add_argument("-m", "--multirun", action="store_true", help="expand sweeps (a=1,2) and check every job")
    parser.add_argument("-cn", "--config-name", default="train", help="config to compose (default: %(default)s)")
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))

    from expkit.config.compose import expand_sweep
    from expkit.config.validate import validate_sweep
    from expkit.errors import ExpkitError, exit_with

    try:
        jobs = expand_sweep(args.overrides) if args.multirun else [list(args.overrides)]
        specs = validate_sweep(jobs, config_name=args.config_name)
    except ExpkitError as exc:
        exit_with(exc)
    data = sorted({spec.describe() for spec in specs if spec is not None})
    print(f"ok: {len(jobs)} job(s) of conf/{args.config_name}.yaml are valid" + (f" ({'; '.join(data)})" if data else "") + ".")


if __name__ == "__main__":
    main()
