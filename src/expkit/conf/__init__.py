"""expkit's config tree (package data): ``hydra.searchpath=[pkg://expkit.conf]``."""
