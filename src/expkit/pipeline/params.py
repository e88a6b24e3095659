"""Compose ``conf/pipeline.yaml`` into ``params.yaml``: the file ``dvc repro`` reads.

    python -m expkit.pipeline.params                  # rewrite params.yaml from conf/
    python -m expkit.pipeline.params --check          # exit 1 when params.yaml is stale
    python -m expkit.pipeline.params model=cnn        # with Hydra overrides, as `dvc exp run -S`

``dvc exp run`` composes the same file itself (``.dvc/config``: ``hydra.*``), but ``dvc repro``
never does: after editing ``conf/``, run this and commit ``params.yaml``. The config directory
and name are read from DVC's own config, and the composition is DVC's: Hydra ``compose`` (no
run-time ``hydra`` node), every interpolation resolved, dumped with ``OmegaConf.to_yaml``. The
result is byte-for-byte what ``dvc exp run`` writes, except that a ``${oc.env:NAME}`` (the way to
pass a secret) stays a reference here, where DVC would write the secret's value.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

from expkit.pipeline import PARAMS_FILE, PIPELINE_CONFIG


def hydra_settings(start: Path | None = None) -> tuple[Path, Path, str]:
    """(repository root, config dir, config name) from the DVC repository around ``start``;
    outside one, the working directory with expkit's ``conf/`` and ``pipeline``."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    from expkit.paths import config_dir

    try:
        with Repo(str(start or Path.cwd())) as repo:
            root, hydra = Path(repo.root_dir), repo.config.get("hydra", {})
    except NotDvcRepoError:
        return Path.cwd(), config_dir(), PIPELINE_CONFIG
    # DVC's own defaults when a key is unset (dvc/repo/experiments/queue/base.py).
    return root, root / hydra.get("config_dir", "conf"), hydra.get("config_name", "config")


def compose_params(overrides: Sequence[str] = (), config_dir: Path | None = None,
                   config_name: str | None = None) -> str:
    """The YAML text of ``params.yaml``: the pipeline config composed with ``overrides``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    if config_dir is None or config_name is None:
        _, found_dir, found_name = hydra_settings()
        config_dir, config_name = config_dir or found_dir, config_name or found_name
    from expkit.secrets import ENV_REFERENCE, keep_env_references

    # version_base=None as DVC does (dvc/utils/hydra.py): the same defaults, the same output.
    with initialize_config_dir(str(Path(config_dir).resolve()), version_base=None):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    if ENV_REFERENCE not in OmegaConf.to_yaml(cfg):
        OmegaConf.resolve(cfg)
        return OmegaConf.to_yaml(cfg)
    # A secret passed as ${oc.env:NAME} stays that reference in params.yaml (DVC's own `dvc exp run`
    # resolves it; expkit's train stage resolves it only when it runs).
    return OmegaConf.to_yaml(OmegaConf.create(keep_env_references(cfg)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m expkit.pipeline.params",
        description="Write params.yaml, the composition of conf/ that `dvc repro` reads.",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=cnn trainer.max_epochs=5")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if params.yaml differs")
    args = parser.parse_args(argv)

    root, config_dir, config_name = hydra_settings()
    text = compose_params(args.overrides, config_dir, config_name)
    output = root / PARAMS_FILE
    source = f"{config_dir.relative_to(root) if config_dir.is_relative_to(root) else config_dir}/{config_name}.yaml"
    if args.check:
        current = output.read_text() if output.is_file() else ""
        if current == text:
            print(f"{output} is the composition of {source}")
            return 0
        sys.stdout.writelines(difflib.unified_diff(
            current.splitlines(keepends=True), text.splitlines(keepends=True),
            fromfile=f"{PARAMS_FILE} (on disk)", tofile=f"{source} (composed)"))
        print(f"\n{output} is stale: run `python -m expkit.pipeline.params` and commit it.", file=sys.stderr)
        return 1
    output.write_text(text)
    print(f"wrote {output} ({source}{' with ' + ' '.join(args.overrides) if args.overrides else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
