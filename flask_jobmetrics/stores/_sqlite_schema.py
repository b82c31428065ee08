"""The SQLite store's file handling: URL, checks at open, connections, DDL and migrations.

``MIGRATIONS[i]`` upgrades a file from schema version ``i`` to ``i + 1``; the code's
version is ``len(MIGRATIONS)``. Migrations only ever append: a released one is never edited.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import ClassVar

from flask_jobmetrics.exceptions import StoreError, StoreUnavailableError

__all__ = [
    "APPLICATION_ID",
    "ForkSafeLock",
    "MIGRATIONS",
    "check_file",
    "connect",
    "current_version",
    "prepare_schema",
    "sqlite_path",
    "store_error",
]

#: ``PRAGMA application_id`` of every flask_jobmetrics store ("JMTR").
APPLICATION_ID = 0x4A4D5452


def sqlite_path(url: str) -> str:
    """The absolute file path named by ``sqlite:///relative`` or ``sqlite:////absolute``."""
    prefix = "sqlite:///"
    if not isinstance(url, str) or url[: len(prefix)].lower() != prefix:
        raise StoreError(
            f"store URL {url!r} is not of the form sqlite:///relative/path or sqlite:////abs/path"
        )
    rest = url[len(prefix) :]
    if "?" in rest or "#" in rest:
        raise StoreError(f"store URL {url!r}: query options are not supported by the sqlite store")
    if not rest or rest == ":memory:" or rest.endswith("/"):
        raise StoreError(f"store URL {url!r} names no database file (an in-memory database cannot be shared)")
    return os.path.abspath(rest)


def store_error(path: str, what: str, exc: BaseException, timeout: float) -> StoreError:
    """A StoreError naming the file, saying what failed and, where known, why."""
    text = str(exc)
    unavailable = True  # the file cannot be used now; the same call may work later
    if "readonly" in text or "read-only" in text:
        what += " (the database file or its directory is read-only)"
    elif "locked" in text or "busy" in text:
        what += f" (locked by another connection for more than {timeout:g} s)"
    elif "not a database" in text:
        what += " (the file is not an SQLite database)"
        unavailable = False
    elif not isinstance(exc, sqlite3.OperationalError):  # a bug or a damaged file, not an outage
        unavailable = False
    kind = StoreUnavailableError if unavailable else StoreError
    return kind(f"sqlite store {path}: {what}: {exc}")


def check_file(path: str) -> None:
    """Create the file's directories and check the file (if any) and directory are writable.

    The file is never opened here: closing any descriptor of a database file drops every
    POSIX lock this process holds on it, including those of open SQLite connections.
    """
    if os.path.isdir(path):
        raise StoreError(f"sqlite store {path}: is a directory, not a database file")
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise StoreUnavailableError(f"sqlite store {path}: cannot create its directory: {exc}") from exc
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise StoreUnavailableError(
            f"sqlite store {path}: the file is read-only (or unreadable) for this user"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreUnavailableError(
            f"sqlite store {path}: the directory is read-only (SQLite creates -wal files there)"
        )


def _switch_to_wal(conn: sqlite3.Connection, timeout: float, sleep: Callable[[float], None]) -> str:
    """``PRAGMA journal_mode = WAL``, waiting up to ``timeout`` s for other connections.

    On a file still in rollback mode the switch reads the header, then upgrades to a write
    lock; SQLite never calls the busy handler for that upgrade (a reader waiting for a writer
    could deadlock), so when another process is switching or writing at that moment the
    pragma fails at once with ``database is locked``. WAL mode is persistent: once any
    connection switched the file, the pragma only reads. So a busy switch is retried here.
    """
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            sleep(min(pause, left))
            pause = min(pause * 2, 0.05)


def connect(path: str, timeout: float, *, sleep: Callable[[float], None] = time.sleep) -> sqlite3.Connection:
    """A new autocommit connection in WAL mode with a busy timeout of ``timeout`` seconds."""
    try:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    except sqlite3.Error as exc:
        raise store_error(path, "cannot open", exc, timeout) from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        mode = _switch_to_wal(conn, timeout, sleep)
        conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.Error as exc:
        conn.close()
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
            raise StoreError(f"sqlite store {path}: the file is not an SQLite database ({exc})") from exc
        raise store_error(path, "cannot configure the connection", exc, timeout) from exc
    if str(mode).lower() != "wal":
        conn.close()
        raise StoreError(f"sqlite store {path}: cannot switch to the WAL journal mode (got {mode!r})")
    return conn


class ForkSafeLock:
    """A re-entrant lock that ``fork()`` waits for, and that every child gets fresh.

    ``os.fork()`` takes every such lock first, so no thread is inside a write transaction
    when a process forks, and the child never inherits a held lock.
    """

    _instances: ClassVar[weakref.WeakSet[ForkSafeLock]] = weakref.WeakSet()
    _held: ClassVar[list[ForkSafeLock]] = []

    def __init__(self) -> None:
        self._lock = threading.RLock()
        ForkSafeLock._instances.add(self)

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.release()

    @classmethod
    def _before_fork(cls) -> None:
        cls._held[:] = list(cls._instances)
        for lock in cls._held:
            lock._lock.acquire()

    @classmethod
    def _after_fork_in_parent(cls) -> None:
        for lock in reversed(cls._held):
            lock._lock.release()
        cls._held.clear()

    @classmethod
    def _after_fork_in_child(cls) -> None:
        for lock in cls._held:
            lock._lock = threading.RLock()
        cls._held.clear()


os.register_at_fork(
    before=ForkSafeLock._before_fork,
    after_in_parent=ForkSafeLock._after_fork_in_parent,
    after_in_child=ForkSafeLock._after_fork_in_child,
)


_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE jobs (
    run_id TEXT PRIMARY KEY,
    fields TEXT NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL,
    start_time TEXT,
    status TEXT
);
CREATE INDEX jobs_by_start ON jobs (start_time DESC, run_id DESC);
CREATE INDEX jobs_by_status_start ON jobs (status, start_time DESC, run_id DESC);
CREATE TABLE clients (
    run_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    fields TEXT NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL,
    PRIMARY KEY (run_id, client_id)
) WITHOUT ROWID;
CREATE TABLE idempotency_keys (key TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
CREATE TABLE outbox (
    kind TEXT NOT NULL,
    run_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    dead INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, run_id, client_id)
) WITHOUT ROWID;
CREATE INDEX outbox_by_due ON outbox (dead, due_at);
CREATE TABLE leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE rate_slots (name TEXT PRIMARY KEY, next_slot REAL NOT NULL) WITHOUT ROWID;
"""


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the open transaction first: run statement by statement.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _migrate_to_v1(conn: sqlite3.Connection) -> None:
    _execute_script(conn, _V1)


Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = [_migrate_to_v1]


def current_version() -> int:
    """The schema version this code writes."""
    return len(MIGRATIONS)


def _stored_version(conn: sqlite3.Connection, path: str) -> int:
    application_id = conn.execute("PRAGMA application_id").fetchone()[0]
    tables = {
        row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    }
    if application_id == 0 and not tables:
        return 0  # a new (or empty) file
    if application_id != APPLICATION_ID or "meta" not in tables:
        raise StoreError(
            f"sqlite store {path}: the file is an SQLite database but not a flask_jobmetrics store "
            f"(application_id={application_id}, tables: {', '.join(sorted(tables)) or 'none'}); "
            "point JOBMETRICS_STORE_URL at another file"
        )
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        raise StoreError(f"sqlite store {path}: the meta table has no schema_version; the file is damaged")
    return int(row[0])


def prepare_schema(conn: sqlite3.Connection, path: str) -> int:
    """Check the file is ours and bring it to ``current_version``; returns that version.

    Runs in the caller's open ``BEGIN IMMEDIATE`` transaction, so two processes opening a new
    file at once migrate it exactly once.
    """
    version = _stored_version(conn, path)
    target = current_version()
    if version > target:
        raise StoreError(
            f"sqlite store {path}: schema version {version} was written by a newer flask_jobmetrics "
            f"(this one knows up to version {target}); upgrade flask_jobmetrics or use another file"
        )
    if version == target:
        return version
    if version == 0:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    for migrate in MIGRATIONS[version:]:
        migrate(conn)
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(target),),
    )
    conn.execute(f"PRAGMA user_version = {target}")
    return target
