"""expkit's config groups in every Hydra app of an environment where expkit is installed.

Hydra's documented way for a library to offer configs to other apps (a ``SearchPathPlugin``):
``pkg://expkit.conf`` is appended to the search path, after the app's own configs, so a research
repo's ``conf/`` adds options to expkit's groups (``model``, ``data``, ...) and a file of the same
name there replaces expkit's. Nothing is added when expkit's own ``conf/`` is already the app's.
"""

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

PROVIDER = "expkit"
PACKAGE_PATH = "pkg://expkit.conf"


class ExpkitSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from expkit.paths import config_dir

        ours = config_dir()
        for element in search_path.get_path():
            if element.path == PACKAGE_PATH or _same_dir(element.path, ours):
                return
        search_path.append(provider=PROVIDER, path=PACKAGE_PATH)


def _same_dir(path: str, ours: Path) -> bool:
    """Whether a search-path entry (``file://DIR``, or a bare ``DIR``) is expkit's ``conf/``."""
    if "://" in path and not path.startswith("file://"):
        return False
    try:
        return Path(path.removeprefix("file://")).resolve() == ours
    except OSError:
        return False
