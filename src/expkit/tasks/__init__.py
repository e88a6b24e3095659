"""Task entry points (``train``, ``eval``): each reads top-down, compose -> build -> run -> record."""
