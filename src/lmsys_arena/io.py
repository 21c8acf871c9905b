"""Atomic file writes, small JSON/parquet helpers and logging setup."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

log = logging.getLogger("lmsys_arena")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's files are 0600


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` keeps its earlier content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class Busy(RuntimeError):
    """Another command holds the lock."""


LOCK_PROBE_S = 0.5  # how long a lock held with no holder line is tried again (see _take_lock)


def _take_lock(fh, wait_s: float = 0.0) -> str | None:
    """flock ``fh`` exclusively: None once taken, else the holder's line, after trying for ``wait_s`` seconds.
    A lock held with no line is tried again for up to LOCK_PROBE_S: its holder is a :func:`lock_holder` probe
    or a command between taking the lock and writing its line (or between erasing it and letting go), all of
    which let go within microseconds; refusing then would make a free fold look busy."""
    import fcntl
    import time

    start = time.monotonic()
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip()
        if time.monotonic() - start >= max(wait_s, 0.0 if holder else LOCK_PROBE_S):
            return holder or "another process"
        time.sleep(0.02)


@contextlib.contextmanager
def exclusive_lock(path: str | Path, what: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock (an flock on ``path``, released when the process ends, even by kill -9);
    if another process holds it (still, after ``wait_s`` seconds), raise :class:`Busy` naming that process and
    what it is doing."""
    import fcntl
    import socket
    import time

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        holder = _take_lock(fh)
        if holder and wait_s > 0:
            log.info("%s: waiting up to %.0f s for %s, held by %s", what, wait_s, path, holder)
            holder = _take_lock(fh, wait_s)
        if holder:
            raise Busy(f"{what}: refused, {path} is held by {holder}; wait for it to finish")
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} ({what}, since {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


BUILD_WAIT_S = 3600.0  # how long a command waits for another one building a cache entry it needs


@contextlib.contextmanager
def build_lock(out: str | Path, what: str) -> Iterator[None]:
    """Build ``out`` (an assembled GGUF, a converted backbone folder, shared by commands) in one process at a time:
    others that need it wait (train commands started together, one a GPU) and then find it built; the caller
    checks again under the lock. The lock file ``.<name>.lock`` sits beside ``out``."""
    out = Path(out)
    with exclusive_lock(out.with_name(f".{out.name}.lock"), what, wait_s=BUILD_WAIT_S):
        yield


def build_once(out: str | Path, what: str, built: Callable[[], bool], build: Callable[[], object]) -> None:
    """``build()`` the shared cache entry ``out`` unless ``built()``: under :func:`build_lock`, asking ``built()``
    again there (a command that waited finds it built). Asked before the lock too, so a built entry in a
    read-only folder needs no lock file."""
    if built():
        return
    with build_lock(out, what):
        if not built():
            build()


def lock_holder(path: str | Path) -> str | None:
    """Who holds the :func:`exclusive_lock` on ``path`` now (its line), or None when nobody does. A lock this
    process holds through another open file counts as held."""
    if not Path(path).exists():
        return None
    with open(path, "a+") as fh:  # closing the file drops a lock taken here
        return _take_lock(fh)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path):
    """A JSON file; a corrupt one is a clear error naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: corrupt JSON ({e}); restore it, or retrain with FRESH=1") from None


def write_parquet(path: str | Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    log.info("wrote %s (%d rows)", path, len(df))


def write_csv(path: str | Path, df: pd.DataFrame, **kw) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, **kw)
    log.info("wrote %s (%d rows)", path, len(df))


class OncePerRun(logging.Filter):
    """Drops a warning already shown in this run (e.g. the same warning from every fold): an exact repeat,
    or any repeat of a message template logged with ``extra={"once": True}``. Reset per run."""

    def __init__(self):
        super().__init__()
        self.seen: set = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        if not hasattr(record, "_shown"):  # decided once per record, whichever handler asks first
            key = record.msg if getattr(record, "once", False) else record.getMessage()
            record._shown = key not in self.seen
            self.seen.add(key)
        return record._shown


ONCE_PER_RUN = OncePerRun()


def setup_logging(level: str | int = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for handler in logging.getLogger().handlers:  # the console handler basicConfig made (not a test harness's)
        if type(handler) is logging.StreamHandler and ONCE_PER_RUN not in handler.filters:
            handler.addFilter(ONCE_PER_RUN)
