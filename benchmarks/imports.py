"""The unavoidable imports, timed from the process's launch to their end (no interpreter teardown).

    python benchmarks/imports.py torch pytorch_lightning wandb

Writes ``{"t0", "imports_done", "cpu_s"}`` to ``$BENCH_OUT``: the runner's launch time, the wall
clock when the last module is imported, and the process's CPU time then. A run's time to its
first step minus this is what it spends beyond importing what it must.
"""

import importlib
import json
import os
import sys
import time

for module in sys.argv[1:]:
    importlib.import_module(module)
done, cpu = time.time(), time.process_time()
if os.environ.get("BENCH_OUT"):
    with open(os.environ["BENCH_OUT"], "w") as f:
        json.dump({"t0": float(os.environ.get("BENCH_T0", "nan")), "imports_done": done, "cpu_s": cpu}, f)
