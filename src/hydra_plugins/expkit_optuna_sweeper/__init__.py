"""expkit's Optuna sweeper for Hydra (``hydra/sweeper=expkit_optuna``): Optuna >= 4, RDB storage."""
