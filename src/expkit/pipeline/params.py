"""Compose ``conf/pipeline.yaml`` into ``params.yaml``: the file ``dvc repro`` reads.

    python -m expkit.pipeline.params                  # rewrite params.yaml from conf/
    python -m expkit.pipeline.params --check          # exit 1 when params.yaml is stale
    python -m expkit.pipeline.params model=cnn        # with Hydra overrides, as `dvc exp run -S`

``dvc exp run`` composes the same file itself (``.dvc/config``: ``hydra.enabled``), but
``dvc repro`` never does: after editing ``conf/``, run this and commit ``params.yaml``.
The composition is DVC's own: Hydra ``compose`` (no run-time ``hydra`` node), every
interpolation resolved, dumped with ``OmegaConf.to_yaml``; the same bytes as ``dvc exp run``.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

from expkit.pipeline import PARAMS_FILE, PIPELINE_CONFIG


def compose_params(overrides: Sequence[str] = (), config_dir: Path | None = None) -> str:
    """The YAML text of ``params.yaml``: ``conf/pipeline.yaml`` composed with ``overrides``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from expkit.paths import config_dir as default_config_dir

    directory = Path(config_dir or default_config_dir()).resolve()
    # version_base=None as DVC does (dvc/utils/hydra.py): the same defaults, the same output.
    with initialize_config_dir(str(directory), version_base=None):
        cfg = compose(config_name=PIPELINE_CONFIG, overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return OmegaConf.to_yaml(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m expkit.pipeline.params",
        description="Write params.yaml, the composition of conf/pipeline.yaml that `dvc repro` reads.",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=cnn trainer.max_epochs=5")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if params.yaml differs")
    parser.add_argument("--output", default=PARAMS_FILE, help="file to write (default: %(default)s)")
    args = parser.parse_args(argv)

    text = compose_params(args.overrides)
    output = Path(args.output)
    if args.check:
        current = output.read_text() if output.is_file() else ""
        if current == text:
            print(f"{output} is the composition of conf/{PIPELINE_CONFIG}.yaml")
            return 0
        sys.stdout.writelines(difflib.unified_diff(
            current.splitlines(keepends=True), text.splitlines(keepends=True),
            fromfile=f"{output} (committed)", tofile=f"conf/{PIPELINE_CONFIG}.yaml (composed)"))
        print(f"\n{output} is stale: run `python -m expkit.pipeline.params` and commit it.", file=sys.stderr)
        return 1
    output.write_text(text)
    print(f"wrote {output} (conf/{PIPELINE_CONFIG}.yaml{' with ' + ' '.join(args.overrides) if args.overrides else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
