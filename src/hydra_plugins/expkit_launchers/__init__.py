"""expkit's Hydra launcher plugins (Hydra loads plugins only from the hydra_plugins namespace)."""
