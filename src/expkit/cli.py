"""The ``expkit`` command: a short table of sub-commands, each a task entry point.

    expkit train model=cnn data=digits     # same as python train.py ...
    expkit eval ckpt_path=...              # same as python eval.py ...
    expkit validate model=cnn data=wine    # fail before launch: check the config, run nothing
    expkit runs logs --where model.net._target_=expkit.models.nets.CNN
    expkit compare RUN_A RUN_B             # or by condition: expkit compare model=mlp model=cnn
    expkit reproduce RUN_DIR               # same config, new directory; refuses if code/data differ
    expkit resume RUN_DIR                  # continue an interrupted run where it stopped
    expkit register RUN_DIR --name digits  # a model version; expkit promote RUN_DIR --stage production
    expkit export RUN_DIR --format onnx    # expkit predict ckpt_path=... data.path=new.csv
    expkit --version
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def _hydra_task(module: str, name: str) -> Callable[[list[str]], None]:
    def run(args: list[str]) -> None:
        import importlib

        sys.argv = [f"expkit-{name}", *args]  # Hydra reads its overrides from sys.argv
        importlib.import_module(module).main()

    return run


def _command(module: str, name: str) -> Callable[[list[str]], None]:
    def run(args: list[str]) -> None:
        import importlib

        importlib.import_module(module).main(args, name)

    return run


# name -> (runs the command with its arguments, one line of help)
COMMANDS: dict[str, tuple[Callable[[list[str]], None], str]] = {
    "train": (_hydra_task("expkit.tasks.train", "train"), "train a model (Hydra overrides follow, see `expkit train --help`)"),
    "eval": (_hydra_task("expkit.tasks.eval", "eval"), "evaluate a checkpoint on the test split (ckpt_path=...)"),
    "validate": (_command("expkit.config.command", "validate"), "check a config (overrides, -m sweeps) without running it; exit 2/3 on errors"),
    "runs": (_command("expkit.tracking.browse", "runs"), "list runs under a folder (default logs/), newest first, with filters"),
    "compare": (_command("expkit.tracking.browse", "compare"), "config and metric differences of two runs"),
    "reproduce": (_command("expkit.tasks.rerun", "reproduce"), "re-run a recorded run with exactly its config, into a new run directory"),
    "resume": (_command("expkit.tasks.rerun", "resume"), "continue an interrupted run in its own directory from its last checkpoint"),
    "predict": (_hydra_task("expkit.tasks.predict", "predict"), "predict new inputs with a checkpoint (ckpt_path=... data.path=...), writes a CSV"),
    "register": (_command("expkit.registry.commands", "register"), "register a run's best checkpoint as a model version (DVC + W&B artifact)"),
    "promote": (_command("expkit.registry.commands", "promote"), "give a version a stage (production) if it beats the holder on the KPIs"),
    "models": (_command("expkit.registry.commands", "models"), "list registered models: versions, stages, KPI metrics"),
    "export": (_command("expkit.registry.commands", "export"), "export a run to ONNX/TorchScript, checked against the model on the test split"),
    "report": (_command("expkit.registry.commands", "report"), "new model vs production: KPIs, per-class metrics, drift, promotion verdict"),
    "drift": (_command("expkit.registry.commands", "drift"), "new data's feature statistics vs a registered model's training data"),
    "init": (_command("expkit.scaffold", "init"), "create a research repository (conf/, a plain model and datamodule, DVC, a test)"),
}


def usage() -> str:
    lines = ["usage: expkit <command> [args...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "  --version  print the version"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import os

    args = sys.argv[1:] if argv is None else argv
    # As under `python -m` (and `python train.py` from a project's root): a package in the current
    # directory (`expkit init`'s my_lab) imports; the console script puts only its own folder first.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return
    if args[0] == "--version":
        from expkit import __version__

        print(f"expkit {__version__}")
        return
    if args[0] not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(args[0], COMMANDS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"expkit: unknown command '{args[0]}'.{hint}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    COMMANDS[args[0]][0](args[1:])


if __name__ == "__main__":
    main()
