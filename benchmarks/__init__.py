"""expkit's benchmark: the same training three ways (hand-written, plain Lightning, ``train.py``).

Run ``python benchmarks/run.py --help``; results go to ``benchmarks/results/``.
"""
