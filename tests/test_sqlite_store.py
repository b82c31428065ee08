"""SQLite store behaviour beyond the contract: files, schema, errors, processes, fork."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from flask_jobmetrics.deltas import ClientDelta
from flask_jobmetrics.exceptions import StoreError
from flask_jobmetrics.stores import _sqlite_schema, load_store
from flask_jobmetrics.stores.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[1]
LEADS = "Leads Processed"
T0 = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=timezone.utc)

#: A worker process: opens the store, prints "ready", waits for a line on stdin, then works.
WORKER = r"""
import json, sys
from flask_jobmetrics.deltas import ClientDelta
from flask_jobmetrics.stores.sqlite import SQLiteStore

url, action, arg, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
store = SQLiteStore(url)
print("ready", flush=True)
sys.stdin.readline()
if action == "merge":
    for _ in range(count):
        store.merge_client(ClientDelta("run", arg, {"Leads Processed": ("sum", 1)}))
    print("done", flush=True)
elif action == "reserve":
    print(json.dumps([store.reserve_job(arg, {}).run_id for _ in range(count)]), flush=True)
elif action == "merge-then-wait":
    from datetime import datetime
    when = datetime.fromisoformat("2024-05-01T12:00:00.250000+00:00")
    ops = {"Leads Processed": ("sum", count), "Start Time": ("min", when)}
    store.merge_client(ClientDelta("run", arg, ops, complete=True, idempotency_key="once"))
    print("merged", flush=True)
    sys.stdin.readline()  # killed while waiting here
"""


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _workers(url: str, jobs: list[tuple[str, str, int]]) -> list[str]:
    """Run one worker per job at the same moment; returns each one's last output line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, action, arg, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for action, arg, count in jobs
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:  # everyone starts together
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [proc.returncode for proc in procs] == [0] * len(procs)
    return [out.strip().splitlines()[-1] for out in outputs]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "jobmetrics.sqlite3"


@pytest.fixture
def store(db: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(_url(db))
    yield store
    store.close()


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _stored_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])


# -- URLs and files ----------------------------------------------------------------------


def test_absolute_url_creates_parent_directories(tmp_path: Path) -> None:
    """sqlite:////abs/path creates the missing directories and the file."""
    path = tmp_path / "a" / "b" / "store.db"
    store = SQLiteStore(f"sqlite:///{path}")
    assert store.url == f"sqlite:///{path}"
    assert store.path == str(path)
    assert path.is_file()
    store.close()


def test_relative_url_is_relative_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sqlite:///relative/path resolves against the current directory."""
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore("sqlite:///instance/jm.sqlite3")
    assert store.path == str(tmp_path / "instance" / "jm.sqlite3")
    assert (tmp_path / "instance" / "jm.sqlite3").is_file()
    store.close()


def test_load_store_routes_sqlite_urls(db: Path) -> None:
    """load_store returns an SQLiteStore for a sqlite:/// URL, with the TTL given."""
    store = load_store(_url(db), idempotency_ttl=5.0)
    assert isinstance(store, SQLiteStore)
    store.close()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://host/x.db",
        "sqlite:///",
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///dir/",
        "sqlite:////",
        "sqlite:///x.db?mode=ro",
        "postgres:///x.db",
    ],
)
def test_bad_urls_are_rejected_naming_the_url(url: str) -> None:
    """URLs that name no shareable file raise StoreError naming the URL."""
    with pytest.raises(StoreError, match="store URL") as info:
        SQLiteStore(url)
    assert repr(url) in str(info.value)


def test_directory_path_is_rejected(tmp_path: Path) -> None:
    """A path that is a directory raises StoreError saying so."""
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match="is a directory"):
        SQLiteStore(_url(tmp_path / "dir.db"))


def test_file_is_wal_with_our_application_id_and_version(store: SQLiteStore, db: Path) -> None:
    """A new file is in WAL mode, carries our application_id and records the schema version."""
    conn = _raw(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA application_id").fetchone()[0] == _sqlite_schema.APPLICATION_ID
    assert _stored_version(conn) == _sqlite_schema.current_version()
    assert conn.execute("PRAGMA user_version").fetchone()[0] == _sqlite_schema.current_version()
    conn.close()


def test_reopen_keeps_data_and_schema(store: SQLiteStore, db: Path) -> None:
    """Reopening a current file changes no schema and sees every row, datetimes as aware UTC."""
    store.merge_client(ClientDelta("run", "acme", {LEADS: ("sum", 4), "Start Time": ("min", T0)}))
    conn = _raw(db)
    schema_before = conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    other = SQLiteStore(_url(db))
    row = other.get_client("run", "acme")
    assert row is not None
    assert row.fields[LEADS] == 4
    assert row.fields["Start Time"] == T0
    assert row.fields["Start Time"].tzinfo is not None
    assert conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema_before
    conn.close()
    other.close()


# -- errors at open ------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["hello", "hello, I am not a database\n" * 200])
def test_text_file_is_not_a_database(tmp_path: Path, text: str) -> None:
    """A text file raises StoreError naming the path and saying it is not an SQLite database."""
    path = tmp_path / "notes.txt"
    path.write_text(text)
    with pytest.raises(StoreError, match="not an SQLite database") as info:
        SQLiteStore(_url(path))
    assert str(path) in str(info.value)
    assert path.read_text() == text


def test_empty_file_becomes_a_store(tmp_path: Path) -> None:
    """An empty file (e.g. made by touch) is initialised as a new store."""
    path = tmp_path / "empty.sqlite3"
    path.touch()
    store = SQLiteStore(_url(path))
    store.merge_client(ClientDelta("run", "acme", {LEADS: ("sum", 1)}))
    assert store.get_client("run", "acme") is not None
    store.close()


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    """An SQLite database of another application raises 'not a flask_jobmetrics store'."""
    path = tmp_path / "app.db"
    conn = _raw(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.close()
    with pytest.raises(StoreError, match="not a flask_jobmetrics store") as info:
        SQLiteStore(_url(path))
    assert str(path) in str(info.value)
    conn = _raw(path)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["users"]
    conn.close()


def test_foreign_application_id_is_refused(tmp_path: Path) -> None:
    """An empty database stamped with another application_id is refused too."""
    path = tmp_path / "other.db"
    conn = _raw(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.close()
    with pytest.raises(StoreError, match="not a flask_jobmetrics store"):
        SQLiteStore(_url(path))


def test_newer_schema_version_is_refused(store: SQLiteStore, db: Path) -> None:
    """A file written by a newer schema raises StoreError saying so."""
    conn = _raw(db)
    newer = str(_sqlite_schema.current_version() + 1)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (newer,))
    conn.close()
    with pytest.raises(StoreError, match="written by a newer flask_jobmetrics") as info:
        SQLiteStore(_url(db))
    assert str(db) in str(info.value)


def test_older_schema_is_migrated_once(store: SQLiteStore, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file at an older version runs each newer migration once, in order, keeping its data."""
    store.merge_client(ClientDelta("run", "acme", {LEADS: ("sum", 1)}))
    store.close()
    calls: list[int] = []

    def add_notes_table(conn: sqlite3.Connection) -> None:
        calls.append(1)
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")

    old_version = _sqlite_schema.current_version()
    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", [*_sqlite_schema.MIGRATIONS, add_notes_table])
    upgraded = SQLiteStore(_url(db))
    again = SQLiteStore(_url(db))
    assert calls == [1]
    conn = _raw(db)
    assert _stored_version(conn) == old_version + 1
    assert conn.execute("SELECT COUNT(*) FROM notes").fetchone()[0] == 0
    conn.close()
    row = again.get_client("run", "acme")
    assert row is not None
    assert row.fields[LEADS] == 1
    upgraded.close()
    again.close()
    monkeypatch.undo()
    with pytest.raises(StoreError, match="newer"):
        SQLiteStore(_url(db))


def test_failed_migration_leaves_file_untouched(
    store: SQLiteStore, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration that fails rolls back: the version stays and the error is a StoreError."""
    store.close()

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (id INTEGER)")
        conn.execute("THIS IS NOT SQL")

    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", [*_sqlite_schema.MIGRATIONS, broken])
    with pytest.raises(StoreError, match=str(db)):
        SQLiteStore(_url(db))
    conn = _raw(db)
    assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'half_done'").fetchone()[0] == 0
    assert _stored_version(conn) == _sqlite_schema.current_version() - 1
    conn.close()


def _open_without_root(url: str) -> str:
    """Construct SQLiteStore(url) in a child process whose file permissions are enforced.

    Root ignores file modes, so when the tests run as root the child drops to ``nobody``
    first: the same check a deployment running as an ordinary user gets.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        message = "crashed"
        try:
            os.close(read_fd)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                SQLiteStore(url).close()
                message = "opened"
            except StoreError as exc:
                message = f"StoreError: {exc}"
            except BaseException as exc:
                message = f"{type(exc).__name__}: {exc}"
            os.write(write_fd, message.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory outside root's private pytest tree, readable by an unprivileged user."""
    path = Path(tempfile.mkdtemp(prefix="jm-ro-"))
    path.chmod(0o755)
    yield path
    path.chmod(0o755)
    shutil.rmtree(path)


def assert_read_only(message: str, path: Path) -> None:
    """The one-line error a store gives for a database it cannot write."""
    assert message.startswith("StoreError: ")
    assert "read-only" in message
    assert str(path) in message


def test_read_only_file_is_refused(shared_dir: Path) -> None:
    """A database file the process may not write raises StoreError saying it is read-only."""
    path = shared_dir / "ro.sqlite3"
    SQLiteStore(_url(path)).close()
    if os.geteuid() == 0:
        os.chown(shared_dir, 65534, 65534)  # the directory is writable, only the file is not
    path.chmod(0o444)
    message = _open_without_root(_url(path))
    assert_read_only(message, path)


def test_read_only_directory_is_refused(shared_dir: Path) -> None:
    """A new database in a directory the process may not write raises StoreError saying so."""
    path = shared_dir / "new.sqlite3"
    shared_dir.chmod(0o555)
    message = _open_without_root(_url(path))
    assert_read_only(message, path)


def test_unwritable_wal_files_are_refused_by_sqlite(shared_dir: Path) -> None:
    """When only SQLite finds it cannot write (its -wal/-shm files), the error still says read-only."""
    path = shared_dir / "db.sqlite3"
    keeper = SQLiteStore(_url(path))  # keeps the -wal and -shm files in place
    keeper.merge_client(ClientDelta("run", "acme", {LEADS: ("sum", 1)}))
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").chmod(0o444)
    if os.geteuid() == 0:
        os.chown(shared_dir, 65534, 65534)
        os.chown(path, 65534, 65534)
    message = _open_without_root(_url(path))
    assert_read_only(message, path)
    keeper.close()


def test_locked_database_raises_store_error(store: SQLiteStore, db: Path) -> None:
    """A file locked by another writer past the timeout raises StoreError saying it is locked."""
    impatient = SQLiteStore(_url(db), timeout=0.2)
    holder = _raw(db)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="locked") as info:
            SQLiteStore(_url(db), timeout=0.2)
        assert str(db) in str(info.value)
        with pytest.raises(StoreError, match="locked"):
            impatient.merge_client(ClientDelta("run", "acme", {LEADS: ("sum", 1)}))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert impatient.get_client("run", "acme") is None
    row, _ = impatient.merge_client(ClientDelta("run", "acme", {LEADS: ("sum", 1)}))
    assert row.fields[LEADS] == 1
    impatient.close()


def test_switch_to_wal_waits_for_a_writer_of_a_new_file(tmp_path: Path) -> None:
    """Opening a rollback-mode file while another connection writes it waits for that writer
    (SQLite refuses the WAL switch at once then, without calling its busy handler)."""
    path = tmp_path / "new.sqlite3"
    holder = _raw(path)
    holder.execute("CREATE TABLE other (x)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO other VALUES (1)")
    waits: list[float] = []

    def writer_finishes(seconds: float) -> None:  # the other writer commits while we wait
        waits.append(seconds)
        if holder.in_transaction:
            holder.execute("COMMIT")

    conn = _sqlite_schema.connect(str(path), 5.0, sleep=writer_finishes)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert len(waits) >= 1
    finally:
        conn.close()
        holder.close()


def test_switch_to_wal_gives_up_after_the_timeout(tmp_path: Path) -> None:
    """A WAL switch blocked past the timeout raises StoreError saying the file is locked."""
    path = tmp_path / "new.sqlite3"
    holder = _raw(path)
    holder.execute("CREATE TABLE other (x)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO other VALUES (1)")
    try:
        with pytest.raises(StoreError, match="locked"):
            _sqlite_schema.connect(str(path), 0.05)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_runtime_sqlite_errors_are_wrapped(store: SQLiteStore, db: Path) -> None:
    """An sqlite3 error during a call surfaces as StoreError naming the file, and nothing is applied."""
    store.merge_client(ClientDelta("run", "acme", {LEADS: ("sum", 1)}))
    conn = _raw(db)
    conn.execute("DROP TABLE outbox")
    conn.close()
    with pytest.raises(StoreError, match="outbox") as info:
        store.merge_client(ClientDelta("run", "acme", {LEADS: ("sum", 1)}))
    assert str(db) in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    row = store.get_client("run", "acme")
    assert row is not None
    assert row.fields[LEADS] == 1
    with pytest.raises(StoreError):
        store.outbox_counts()


def test_unencodable_value_raises_store_error(store: SQLiteStore) -> None:
    """A value JSON cannot hold raises StoreError and changes nothing."""
    with pytest.raises(StoreError, match="cannot encode"):
        store.merge_client(ClientDelta("run", "acme", {"Odd": ("last", {1, 2})}))
    assert store.get_client("run", "acme") is None


# -- idempotency keys ----------------------------------------------------------------------


def test_expired_idempotency_keys_are_purged(db: Path) -> None:
    """Keys past their TTL are deleted by a later merge that carries a key."""
    now = [1000.0]
    store = SQLiteStore(_url(db), idempotency_ttl=10.0, clock=lambda: now[0])
    for key in ("a", "b", "c"):
        store.merge_client(ClientDelta("run", "acme", {LEADS: ("sum", 1)}, idempotency_key=key))
    now[0] += 3600.0
    store.merge_client(ClientDelta("run", "acme", {LEADS: ("sum", 1)}, idempotency_key="d"))
    conn = _raw(db)
    assert [r[0] for r in conn.execute("SELECT key FROM idempotency_keys")] == ["d"]
    conn.close()
    store.close()


# -- connections, threads, fork --------------------------------------------------------------


def test_close_then_use_reopens(store: SQLiteStore) -> None:
    """After close() the next call opens a new connection; close() twice is safe."""
    store.merge_client(ClientDelta("run", "acme", {LEADS: ("sum", 1)}))
    store.close()
    store.close()
    row, _ = store.merge_client(ClientDelta("run", "acme", {LEADS: ("sum", 1)}))
    assert row.fields[LEADS] == 2


def test_fork_child_uses_its_own_connection(store: SQLiteStore) -> None:
    """A forked child using the parent's store object writes through a new connection the parent sees."""
    store.merge_client(ClientDelta("run", "parent", {LEADS: ("sum", 1)}))
    parent_conn = store._conn()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        status = 1
        try:
            os.close(read_fd)
            store.merge_client(ClientDelta("run", "child", {LEADS: ("sum", 7)}))
            os.write(write_fd, b"new" if store._conn() is not parent_conn else b"same")
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        said = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert said == b"new"
    assert store._conn() is parent_conn
    child = store.get_client("run", "child")
    assert child is not None
    assert child.fields[LEADS] == 7
    row, _ = store.merge_client(ClientDelta("run", "parent", {LEADS: ("sum", 1)}))
    assert row.fields[LEADS] == 2
    job = store.get_job("run")
    assert job is not None
    assert job.client_ids == ("child", "parent")


# -- several processes -----------------------------------------------------------------------


@pytest.mark.slow
def test_processes_merging_one_row_get_exact_total(store: SQLiteStore, db: Path) -> None:
    """4 processes x 500 merges into the same (run, client) give exactly 2,000."""
    assert _workers(_url(db), [("merge", "acme", 500)] * 4) == ["done"] * 4
    row = store.get_client("run", "acme")
    assert row is not None
    assert row.fields[LEADS] == 2000
    assert row.version == 2000


@pytest.mark.slow
def test_processes_merging_own_rows_share_one_job(store: SQLiteStore, db: Path) -> None:
    """4 processes x 500 merges, each on its own client, give 500 each and one job row."""
    clients = ["c0", "c1", "c2", "c3"]
    _workers(_url(db), [("merge", c, 500) for c in clients])
    assert [r.fields[LEADS] for r in store.list_clients("run")] == [500] * 4
    jobs = store.list_jobs()
    assert [j.run_id for j in jobs] == ["run"]
    assert jobs[0].client_ids == tuple(clients)
    assert jobs[0].version == 1


@pytest.mark.slow
def test_processes_reserving_the_same_id_get_distinct_ids(store: SQLiteStore, db: Path) -> None:
    """Two processes reserving from the same candidate at once never get the same run ID."""
    lines = _workers(_url(db), [("reserve", "240501-120000", 40)] * 2)
    ids = [run_id for line in lines for run_id in json.loads(line)]
    assert len(ids) == 80
    assert sorted(ids) == [f"240501-12{i // 60:02d}{i % 60:02d}" for i in range(80)]
    assert len(store.list_jobs(limit=1000)) == 80


@pytest.mark.slow
def test_merge_survives_sigkill(db: Path) -> None:
    """A merge that returned is in the file after its process is killed with SIGKILL."""
    SQLiteStore(_url(db)).close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, _url(db), "merge-then-wait", "acme", "42"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "merged"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    store = SQLiteStore(_url(db))
    row = store.get_client("run", "acme")
    assert row is not None
    assert row.fields[LEADS] == 42
    assert row.fields["Start Time"] == T0
    assert row.completed is True
    retry = ClientDelta("run", "acme", {LEADS: ("sum", 1)}, idempotency_key="once")
    assert store.merge_client(retry)[1] is False
    assert store.outbox_counts() == (2, 0)
    store.close()
