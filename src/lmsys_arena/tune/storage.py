"""Study storage: sqlite by default, any RDB (PostgreSQL for many machines) with heartbeats, and the
cross-process lock under which workers claim trials."""

from __future__ import annotations

import contextlib
import fcntl
import time
import warnings
import zlib
from pathlib import Path

from lmsys_arena.tune.settings import TuneSettings

STUDIES_DIR = Path("studies")
SCHEMA_RETRIES = 5  # opening a fresh database's storage while another worker creates its tables


def default_storage(study: str) -> str:
    return f"sqlite:///{STUDIES_DIR / study}.db"


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 (a dependency) when 3 is absent."""
    if url.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


def open_storage(url: str, s: TuneSettings):
    """RDB storage with heartbeats: a dead worker's RUNNING trial becomes FAIL and is queued again."""
    import optuna
    from optuna.storages import RDBStorage

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
    retry_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    kwargs = {"heartbeat_interval": s.heartbeat_interval, "grace_period": s.grace_period or 3 * s.heartbeat_interval}
    if retry_cls is not None:  # optuna >= 4.9
        kwargs["heartbeat_stale_trial_callback"] = retry_cls(max_retry=s.max_retry)
    else:
        kwargs["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=s.max_retry)
    engine = {"pool_pre_ping": True}
    if url.startswith("sqlite:"):
        path = _sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 120}}  # workers wait for sqlite's write lock instead of failing
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(SCHEMA_RETRIES):
        try:
            return RDBStorage(normalize_url(url), engine_kwargs=engine, **kwargs)
        except (IntegrityError, ProgrammingError):
            # workers started at once on a fresh database all create its tables; the losers' CREATE fails
            # ("already exists"), and once the winner has committed, opening again finds the schema in place
            if attempt == SCHEMA_RETRIES - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def _sqlite_path(url: str) -> Path | None:
    rest = url.split(":///", 1)[1] if ":///" in url else ""
    return Path(rest) if rest and rest != ":memory:" else None


@contextlib.contextmanager
def claim_lock(storage, url: str, study: str):
    """A cross-process mutex around "count trials, then start one" (so k workers stop at exactly TRIALS).

    sqlite: an flock beside the file (one machine). PostgreSQL/MySQL: an advisory lock on the
    database (many machines); the server drops it if the worker dies. Other URLs: no lock, and
    concurrent workers may overshoot the target by up to k-1 trials.
    """
    dialect = url.split(":", 1)[0].split("+", 1)[0]
    if dialect == "sqlite":
        path = _sqlite_path(url)
        if path is None:
            yield
            return
        with open(f"{path}.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    if dialect not in ("postgresql", "mysql"):
        yield
        return
    from sqlalchemy import text

    key = zlib.crc32(f"lmsys-tune:{study}".encode()) - 2**31
    lock, unlock = (
        ("SELECT pg_advisory_lock(:k)", "SELECT pg_advisory_unlock(:k)")
        if dialect == "postgresql"
        else ("SELECT GET_LOCK(:k, -1)", "SELECT RELEASE_LOCK(:k)")
    )
    with storage.engine.connect() as conn:
        conn.execute(text(lock), {"k": key})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text(unlock), {"k": key})
            conn.commit()


class _Releasable:
    """Enter once, release early (when the trial has started) or at exit, whichever comes first."""

    def __init__(self, cm):
        self._cm, self._held = cm, False

    def __enter__(self):
        self._cm.__enter__()
        self._held = True
        return self

    def release(self) -> None:
        if self._held:
            self._held = False
            self._cm.__exit__(None, None, None)

    def __exit__(self, *exc):
        self.release()
        return False
