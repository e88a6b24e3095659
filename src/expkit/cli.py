"""The ``expkit`` command: a short table of sub-commands, each a task entry point.

    expkit train model=cnn data=digits     # same as python train.py ...
    expkit eval ckpt_path=...              # same as python eval.py ...
    expkit validate model=cnn data=wine    # fail before launch: check the config, run nothing
    expkit --version
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def _train() -> Callable[[], None]:
    from expkit.tasks.train import main

    return main


def _eval() -> Callable[[], None]:
    from expkit.tasks.eval import main

    return main


def _validate() -> Callable[[], None]:
    from expkit.config.command import main

    return main


COMMANDS: dict[str, tuple[Callable[[], Callable[[], None]], str]] = {
    "train": (_train, "train a model (Hydra overrides follow, see `expkit train --help`)"),
    "eval": (_eval, "evaluate a checkpoint on the test split (ckpt_path=...)"),
    "validate": (_validate, "check a config (overrides, -m sweeps) without running it; exit 2/3 on errors"),
}


def usage() -> str:
    lines = ["usage: expkit <command> [args...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "  --version  print the version"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
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
    task_main = COMMANDS[args[0]][0]()
    sys.argv = [f"expkit-{args[0]}", *args[1:]]  # Hydra reads its overrides from sys.argv
    task_main()


if __name__ == "__main__":
    main()
