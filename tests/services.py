"""The services some sweep tests need (a SLURM cluster, PostgreSQL), started by .ci/services.sh.

Locally a missing service skips its tests with the command that starts it; in CI (``CI`` set) it
fails them: .ci/run starts both, so a missing one is a broken set-up, not a reason to skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

POSTGRES_URL = os.environ.get(
    "EXPKIT_TEST_POSTGRES_URL", "postgresql+psycopg2://expkit:expkit@127.0.0.1:5432/expkit_test"
)


def _missing(what: str) -> None:
    message = f"{what}: start it with `sudo bash .ci/services.sh`"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must run it; see .ci/run)")
    pytest.skip(message)


def require_slurm() -> None:
    """Skip (fail in CI) unless a SLURM controller answers and a node is idle."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        _missing("SLURM is not installed (no sinfo/sbatch)")
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 or not any(s.startswith(("idle", "mixed")) for s in proc.stdout.split()):
        _missing(f"no idle SLURM node (sinfo: {proc.stdout.strip() or proc.stderr.strip()})")


def require_postgres() -> str:
    """The test database's SQLAlchemy URL; skip (fail in CI) when it does not answer."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 5})
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        _missing(f"PostgreSQL at {POSTGRES_URL} does not answer ({type(exc).__name__})")
    return POSTGRES_URL
