"""Where the store keeps its tables: a SQLite file (the default) or a PostgreSQL server.

# Rules:
# - storify.store holds every query once, written with ``?`` placeholders in the SQL
#   that both databases accept (``INSERT ... RETURNING``, ``ON CONFLICT DO NOTHING``,
#   ``TRUE``/``FALSE``). A Database only runs transactions: ``run(work, write=...)``
#   calls ``work(connection)`` inside one transaction, commits when it returns and
#   rolls back when it raises. The few words that differ (the schema's types, how a
#   name is compared ignoring case) are Database attributes.
# - Errors: a driver error meaning "the database cannot answer now" (locked beyond the
#   timeout, server stopped or unreachable, connection lost, pool exhausted) leaves as
#   storify.errors.StoreUnavailable with the driver's error as ``__cause__``; a broken
#   constraint leaves as the driver's integrity error (``integrity_errors``), for the
#   store to turn into a domain error; anything else is a bug and propagates.
# - SQLite: one connection per Database, in autocommit mode, guarded by a lock; a write
#   transaction is ``BEGIN IMMEDIATE`` (takes the file's write lock first, so two
#   processes never interleave a read-check-write; ``busy_timeout`` makes the second wait).
# - PostgreSQL (psycopg 3, imported only when used): a bounded pool of autocommit
#   connections; a write transaction is ``BEGIN`` (READ COMMITTED: the conditional
#   UPDATE re-checks its WHERE after waiting on a row another transaction holds), a
#   consistent read is ``BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY``. A deadlock
#   or serialisation failure is retried (the server rolled the whole transaction back).
#   A pooled connection found dead (the server restarted) is thrown away and the work
#   retried on another when nothing can have been committed: the failure came at BEGIN,
#   or the work only reads.
# - The pool is ours, not psycopg_pool's, to fail fast: with the server down a
#   connection attempt is refused at once and the customer is told so, where
#   psycopg_pool's getconn waits out its whole timeout while it reconnects in the
#   background with backoff. A connection is opened on demand (at most ``pool_size``),
#   so the first request after the server returns reconnects: recovery needs nothing.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from storify.errors import StoreUnavailable

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "Connection",
    "Cursor",
    "Database",
    "PostgresDatabase",
    "SqliteDatabase",
    "WouldWait",
    "open_database",
    "redact",
]

T = TypeVar("T")

log = logging.getLogger("storify.database")

Synchronous = Literal["OFF", "NORMAL", "FULL"]

_POSTGRES_SCHEMES = ("postgresql", "postgres")
_SQLITE_PREFIX = "sqlite://"
# An arbitrary constant: the key of the advisory lock that serialises schema set-up
# among store servers starting at once on one PostgreSQL database.
_SCHEMA_LOCK_KEY = 0x53544F52  # "STOR"
_RETRIES = 3  # deadlocks and serialisation failures retried this many times
# SQLite: the checkpointer thread runs at most this often (seconds) while commits come...
_CHECKPOINT_PAUSE = 0.05
# ...and a commit checkpoints inline only when the WAL holds this many pages (4 KiB each;
# SQLite's default, 1000, would make every few batches of checkouts pay a checkpoint).
_WAL_PAGES_INLINE = 20_000
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
               "keepalives_count": 3}  # fmt: skip


class WouldWait(Exception):
    """:meth:`Database.write_now` would have had to wait: nothing was done."""


class Cursor(Protocol):
    """The part of a DB-API cursor the store uses."""

    @property
    def rowcount(self) -> int:
        """Rows changed by the statement."""

    def fetchone(self) -> Any:
        """Return the next row (a tuple), or None."""

    def fetchall(self) -> list[Any]:
        """Return the remaining rows (tuples)."""


class Connection(Protocol):
    """A connection inside a transaction, taking SQL with ``?`` placeholders."""

    def execute(self, sql: str, parameters: Sequence[object] = (), /) -> Cursor:
        """Run one statement; returns its cursor."""

    def executemany(self, sql: str, rows: Iterable[Sequence[object]], /) -> object:
        """Run one statement once per row of parameters."""


class Database(ABC):
    """A store's database: runs transactions; see the module's rules.

    Attributes:
        kind: ``"sqlite"`` or ``"postgresql"``.
        description: where the data lives, safe to print (no password).
        remote: True when every call waits on a network round trip (callers on an
            event loop should run store calls in a thread).
        name_equals: the condition matching ``products.name`` to ``?`` ignoring case.
        lock_schema: statement serialising schema set-up across servers ('' if none needed).
        lock_rows: the clause ending a SELECT that locks the rows it reads until the
            transaction ends ('' where the write transaction holds a lock of everything).
        serial_writes: True when a write transaction excludes every other writer of the
            whole database (SQLite's write lock): new rows can be given ids in advance.
    """

    kind: str
    description: str
    remote: bool
    name_equals: str
    lock_schema: str = ""
    lock_rows: str = ""
    serial_writes: bool = False

    @property
    @abstractmethod
    def integrity_errors(self) -> tuple[type[Exception], ...]:
        """The driver's exceptions for a broken constraint (unique, check, foreign key)."""

    @abstractmethod
    def run(self, work: Callable[[Connection], T], *, write: bool, snapshot: bool = False) -> T:
        """Run ``work`` in one transaction and return what it returns.

        Args:
            work: called with a connection; may be called again after a transient
                conflict, so it must not keep state across calls.
            write: a read-write transaction (else read-only).
            snapshot: for reads of several statements: one consistent snapshot.

        Raises:
            StoreUnavailable: the database cannot answer now (nothing was committed,
                except when the connection broke during COMMIT: then it is unknown).
            RuntimeError: the database is closed.
        """

    def write_now(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a write transaction if that needs no waiting; else raise WouldWait.

        For callers that must not block (an event loop): nothing was done when WouldWait
        is raised, and ``run(work, write=True)`` in a thread is the way on. Waiting
        means: for a lock another thread or process holds, for an fsync, or for a
        network round trip (so a remote database always raises it).

        Raises:
            WouldWait: see above.
            StoreUnavailable, RuntimeError: as :meth:`run`.
        """
        raise WouldWait(f"every {self.kind} call waits on the network")

    def run_each(
        self, connection: Connection, sql: str, rows: Sequence[Sequence[object]]
    ) -> list[Any]:
        """Run ``sql`` once per row of parameters; return each run's first result row or None.

        For statements with ``RETURNING``; back ends that can send them all before
        reading the results (PostgreSQL's pipeline) do.
        """
        return [connection.execute(sql, row).fetchone() for row in rows]

    @abstractmethod
    def close(self) -> None:
        """Close every connection. Idempotent."""


def redact(database: str) -> str:
    """Return ``database`` (a path or URL) safe to print: a password becomes ``***``."""
    parts = urllib.parse.urlsplit(database)
    if parts.scheme not in _POSTGRES_SCHEMES:
        return database
    netloc = parts.netloc
    user, at, host = netloc.rpartition("@")
    if at and ":" in user:
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = "&".join(
        f"{key}=***" if key == "password" else f"{key}={value}" if value else key
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def open_database(
    database: str,
    *,
    synchronous: Synchronous = "NORMAL",
    busy_timeout: float = 5.0,
    pool_size: int = 10,
) -> Database:
    """Open the database ``database`` names: a file path, ``sqlite:///PATH`` or a PostgreSQL URL.

    ``":memory:"`` (or ``sqlite://``) is a private, throwaway SQLite database.
    ``postgresql://user:password@host:port/dbname?sslmode=...`` (or ``postgres://``) is
    anything libpq accepts as a URI.

    Raises:
        ValueError: an unknown URL scheme, a malformed URL, or a bad option.
        ImportError: a PostgreSQL URL without psycopg installed.
        StoreUnavailable: the database cannot be reached (refused, bad password, no
            such database); ``str(error.__cause__)`` says why.
    """
    if synchronous not in ("OFF", "NORMAL", "FULL"):
        raise ValueError(f"synchronous must be 'OFF', 'NORMAL' or 'FULL', not {synchronous!r}")
    if busy_timeout < 0:
        raise ValueError(f"busy_timeout must be >= 0 seconds, not {busy_timeout}")
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise ValueError(f"pool_size must be a whole number >= 1, not {pool_size!r}")
    scheme = database.partition("://")[0].lower() if "://" in database else ""
    if scheme in _POSTGRES_SCHEMES:
        return PostgresDatabase(database, busy_timeout=busy_timeout, pool_size=pool_size)
    if scheme == "sqlite":
        path = database[len(_SQLITE_PREFIX) :]
        path = path[1:] if path.startswith("/") else path  # sqlite:///x.db is x.db
        path = path or ":memory:"
        return SqliteDatabase(path, synchronous=synchronous, busy_timeout=busy_timeout)
    if scheme:
        raise ValueError(
            f"unsupported database URL scheme {scheme!r}: use a file path, sqlite:///PATH "
            "or postgresql://USER@HOST/DBNAME"
        )
    return SqliteDatabase(database, synchronous=synchronous, busy_timeout=busy_timeout)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# -- SQLite ---------------------------------------------------------------------------------


class SqliteDatabase(Database):
    """A SQLite file in WAL mode (or ``":memory:"``): a writer, a reader and a checkpointer.

    Args:
        path: the file, created when missing.
        synchronous: ``NORMAL`` keeps committed transactions across a killed process,
            ``FULL`` also across power loss.
        busy_timeout: seconds to wait for another process holding the write lock.
    """

    kind = "sqlite"
    remote = False
    name_equals = "name = ?"  # the column is COLLATE NOCASE
    serial_writes = True  # BEGIN IMMEDIATE: one writer of the whole file at a time

    def __init__(
        self, path: str, *, synchronous: Synchronous = "NORMAL", busy_timeout: float = 5.0
    ) -> None:
        if sqlite3.sqlite_version_info < (3, 35):
            raise RuntimeError(
                f"storify needs SQLite 3.35 or later (RETURNING); this Python has "
                f"{sqlite3.sqlite_version}"
            )
        self.path = path
        self.description = path
        self.busy_timeout = busy_timeout
        self._lock = threading.RLock()  # the writer connection
        self._read_lock = threading.Lock()  # the reader connection
        self._writing = 0  # thread id of the writer inside a transaction (0: none)
        self._synchronous = synchronous
        self._closed = False
        self._reader: sqlite3.Connection | None = None
        self._checkpointer: _Checkpointer | None = None
        self._db = self._open(writer=True, synchronous=synchronous)
        if path != ":memory:":  # a second connection to ":memory:" is another database
            try:
                self._reader = self._open(writer=False, synchronous=synchronous)
            except BaseException:
                self._db.close()
                raise
            self._checkpointer = _Checkpointer(self._connect, busy_timeout)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )

    def _open(self, *, writer: bool, synchronous: Synchronous) -> sqlite3.Connection:
        try:
            db = self._connect()
        except sqlite3.Error as error:
            raise StoreUnavailable(_one_line(error)) from error
        try:
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if writer and self.path != ":memory:":
                mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise sqlite3.OperationalError(f"{self.path}: cannot use WAL mode (got {mode})")
                # The checkpointer thread moves the WAL into the file; a commit checkpoints
                # itself only when the WAL outgrows this (the checkpointer fell behind).
                db.execute(f"PRAGMA wal_autocheckpoint = {_WAL_PAGES_INLINE}")
            db.execute(f"PRAGMA synchronous = {synchronous}")
            if writer:
                db.execute("PRAGMA foreign_keys = ON")
            else:
                db.execute("PRAGMA query_only = ON")
        except sqlite3.Error as error:
            db.close()
            raise StoreUnavailable(_one_line(error)) from error
        return db

    @property
    def integrity_errors(self) -> tuple[type[Exception], ...]:
        """``sqlite3.IntegrityError``."""
        return (sqlite3.IntegrityError,)

    def run(self, work: Callable[[Connection], T], *, write: bool, snapshot: bool = False) -> T:
        """Run ``work`` in one transaction (see :meth:`Database.run`).

        Writes take the writer connection (``BEGIN IMMEDIATE``); reads take the reader
        connection, which WAL lets read the last commit while a write is in progress
        (in this process or another), so a read never waits for a writer. A read made
        by the thread inside a write transaction uses the writer (it sees its writes).
        """
        if not write and self._reader is not None and self._writing != threading.get_ident():
            with self._read_lock:
                if self._closed:
                    raise RuntimeError("the store is closed")
                return self._transaction(self._reader, "BEGIN" if snapshot else None, work)
        with self._lock:
            if self._closed:
                raise RuntimeError("the store is closed")
            if not write:
                # Inside this thread's write transaction, a read is part of it.
                begin = "BEGIN" if snapshot and not self._db.in_transaction else None
                return self._transaction(self._db, begin, work)
            outer = self._writing
            self._writing = threading.get_ident()
            try:
                result = self._transaction(self._db, "BEGIN IMMEDIATE", work)
            finally:
                self._writing = outer
        if self._checkpointer is not None:
            self._checkpointer.committed()
        return result

    def write_now(self, work: Callable[[Connection], T]) -> T:
        """Run a write transaction unless it would wait (see :meth:`Database.write_now`).

        It would wait when another thread of this process is writing (the lock), when
        another connection holds the file's write lock (``BEGIN IMMEDIATE`` tried with
        no busy timeout), or with ``synchronous=FULL`` (the commit fsyncs). Otherwise
        the commit only appends to the WAL (the checkpointer does the rest).
        """
        if self._synchronous == "FULL":
            raise WouldWait("synchronous=FULL: every commit is fsynced")
        if not self._lock.acquire(blocking=False):
            raise WouldWait("another thread of this process is writing")
        try:
            if self._closed:
                raise RuntimeError("the store is closed")
            db = self._db
            if db.in_transaction:
                raise WouldWait("this thread is inside a write transaction")
            try:
                db.execute("PRAGMA busy_timeout = 0")
                try:
                    db.execute("BEGIN IMMEDIATE")
                finally:
                    db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            except sqlite3.OperationalError as error:
                # The primary code: BUSY_RECOVERY and BUSY_TIMEOUT are busy too.
                if error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
                    raise WouldWait("another connection holds the write lock") from error
                raise StoreUnavailable(_one_line(error)) from error
            outer = self._writing
            self._writing = threading.get_ident()
            try:
                result = self._transaction(db, "COMMIT", work, begun=True)
            finally:
                self._writing = outer
        finally:
            self._lock.release()
        if self._checkpointer is not None:
            self._checkpointer.committed()
        return result

    @staticmethod
    def _transaction(
        db: sqlite3.Connection,
        begin: str | None,
        work: Callable[[Connection], T],
        *,
        begun: bool = False,
    ) -> T:
        """``begin``, ``work``, COMMIT (none when ``begin`` is None); ``begun``: begun already."""
        try:
            if begin is not None and not begun:
                db.execute(begin)
            try:
                result = work(db)
                if begin is not None:
                    db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as error:
            # Locked beyond busy_timeout by another process, or I/O trouble.
            raise StoreUnavailable(_one_line(error)) from error
        return result

    def close(self) -> None:
        """Stop the checkpointer and close the connections. Idempotent."""
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.close()
        with self._lock, self._read_lock:
            if not self._closed:
                self._closed = True
                if self._reader is not None:
                    self._reader.close()
                self._db.close()


class _Checkpointer:
    """Copies the WAL into the database file from a thread of its own (``PASSIVE``).

    # Rules:
    # - A commit only appends to the WAL (and, with ``synchronous=FULL``, fsyncs it):
    #   that is what makes it durable, and it is unchanged. Moving the WAL's pages into
    #   the main file (a checkpoint, with its fsyncs) is done here, on its own
    #   connection, so no commit waits for it; SQLite lets a PASSIVE checkpoint run
    #   while writers append, and a writer restarts the WAL from its start once
    #   everything in it was copied, so the file stays bounded.
    # - Woken by commits, at most once per _CHECKPOINT_PAUSE; started by the first
    #   commit, stopped and joined by close(). A checkpoint that fails (another
    #   process holds the checkpoint lock, I/O trouble) is tried again at the next
    #   wake; the writer's own wal_autocheckpoint (_WAL_PAGES_INLINE) is the net.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], busy_timeout: float) -> None:
        self._connect = connect
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0  # completed, for tests and curiosity

    def committed(self) -> None:
        """Note a commit: a checkpoint is due."""
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stopping.is_set():
                    self._thread = threading.Thread(
                        target=self._run, name="storify-sqlite-checkpoint", daemon=True
                    )
                    self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        try:
            connection = self._connect()
        except sqlite3.Error as error:
            log.warning("SQLite checkpointer not started (commits checkpoint): %s", error)
            return
        try:
            while True:
                self._wake.wait()
                if self._stopping.is_set():
                    return
                self._wake.clear()
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                except sqlite3.Error as error:
                    log.debug("SQLite checkpoint failed, retried later: %s", error)
                if self._stopping.wait(_CHECKPOINT_PAUSE):
                    return
        finally:
            connection.close()

    def close(self) -> None:
        """Stop the thread (after the checkpoint in progress, if any) and wait for it."""
        with self._lock:
            self._stopping.set()
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join()


# -- PostgreSQL -----------------------------------------------------------------------------


class _Placeholders:
    """A psycopg connection taking ``?`` placeholders (turned into ``%s``, cached)."""

    _cache: dict[str, str] = {}

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection

    @classmethod
    def _sql(cls, sql: str) -> str:
        converted = cls._cache.get(sql)
        if converted is None:
            # Our SQL has no literal '%' or '?' in strings: a plain replace is exact.
            converted = sql.replace("%", "%%").replace("?", "%s")
            if len(cls._cache) < 1000:
                cls._cache[sql] = converted
        return converted

    def execute(self, sql: str, parameters: Sequence[object] = (), /) -> Cursor:
        return self._connection.execute(self._sql(sql), parameters)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]], /) -> object:
        with self._connection.cursor() as cursor:
            cursor.executemany(self._sql(sql), rows)
        return None

    def each_returning(self, sql: str, rows: Sequence[Sequence[object]]) -> list[Any]:
        """Run ``sql`` per row in one pipeline; each run's first result row, or None."""
        if not rows:
            return []
        found: list[Any] = []
        with self._connection.cursor() as cursor:
            cursor.executemany(self._sql(sql), rows, returning=True)
            while True:
                found.append(cursor.fetchone())
                if not cursor.nextset():
                    break
        if len(found) != len(rows):
            raise RuntimeError(f"{len(rows)} statements gave {len(found)} results")
        return found


class PostgresDatabase(Database):
    """A PostgreSQL database reached through a pool of at most ``pool_size`` connections.

    Args:
        url: a libpq URI, ``postgresql://user:password@host:port/dbname``.
        busy_timeout: seconds to wait for a free pooled connection, for a row another
            transaction holds (``lock_timeout``), and to connect.
        pool_size: connections open at most, shared by every thread of the process.

    Raises:
        ValueError: the URL is malformed.
        ImportError: psycopg is not installed.
        StoreUnavailable: the first connection fails (refused, bad password, no database).
    """

    kind = "postgresql"
    remote = True
    name_equals = "lower(name) = lower(?)"  # a unique index on lower(name) backs it
    lock_schema = f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK_KEY})"
    lock_rows = " FOR UPDATE"

    def __init__(self, url: str, *, busy_timeout: float = 5.0, pool_size: int = 10) -> None:
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict
        except ImportError as error:
            raise ImportError(
                "PostgreSQL needs psycopg 3: pip install 'sockwork[postgres]'"
            ) from error
        self._psycopg = psycopg
        self.description = redact(url)
        try:
            given = conninfo_to_dict(url)
            port = str(given.get("port") or "5432")
        except psycopg.ProgrammingError as error:
            message = f"bad PostgreSQL URL {self.description!r}: {_one_line(error)}"
            raise ValueError(message) from None
        if not all(part.isdigit() for part in port.split(",")):
            raise ValueError(f"bad PostgreSQL URL {self.description!r}: port {port!r}")
        self.url = url
        # A database host that vanishes without a reset (power, network) is noticed by
        # TCP keepalives within about 25 s instead of the kernel's two hours; the URL may
        # say otherwise.
        self._options = {key: value for key, value in _KEEPALIVES.items() if key not in given}
        self.busy_timeout = busy_timeout
        self.pool_size = pool_size
        self._connect_timeout = max(2, round(busy_timeout))  # libpq takes whole seconds, >= 2
        self._slots = threading.BoundedSemaphore(pool_size)
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._put(self._connect())  # fails here, at start, on a bad URL or password

    @property
    def integrity_errors(self) -> tuple[type[Exception], ...]:
        """``psycopg.IntegrityError``."""
        return (self._psycopg.IntegrityError,)

    def run_each(
        self, connection: Connection, sql: str, rows: Sequence[Sequence[object]]
    ) -> list[Any]:
        """Run ``sql`` once per row, all sent before the first result is read (a pipeline)."""
        if isinstance(connection, _Placeholders):
            return connection.each_returning(sql, rows)
        return super().run_each(connection, sql, rows)

    # -- the pool -------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        pg = self._psycopg
        try:
            connection: psycopg.Connection[Any] = pg.connect(
                self.url, autocommit=True, connect_timeout=self._connect_timeout, **self._options
            )
        except pg.Error as error:
            raise StoreUnavailable(_one_line(error)) from error
        try:
            # Waiting on another server's row lock is bounded like SQLite's busy_timeout.
            connection.execute(f"SET lock_timeout = {int(self.busy_timeout * 1000)}")
        except pg.Error as error:
            connection.close()
            raise StoreUnavailable(_one_line(error)) from error
        return connection

    def _get(self) -> psycopg.Connection[Any]:
        if not self._slots.acquire(timeout=self.busy_timeout):
            raise StoreUnavailable(
                f"all {self.pool_size} connections busy for {self.busy_timeout} s"
            )
        try:
            with self._lock:
                if self._closed:
                    raise RuntimeError("the store is closed")
                connection = self._idle.pop() if self._idle else None
            return self._connect() if connection is None else connection
        except BaseException:
            self._slots.release()
            raise

    def _put(self, connection: psycopg.Connection[Any]) -> None:
        """Give back a connection taken by :meth:`_get` (or the first one)."""
        status = connection.info.transaction_status
        healthy = not connection.closed and status == self._psycopg.pq.TransactionStatus.IDLE
        with self._lock:
            keep = healthy and not self._closed
            if keep:
                self._idle.append(connection)
        if not keep:
            connection.close()

    def _release(self, connection: psycopg.Connection[Any]) -> None:
        self._put(connection)
        self._slots.release()

    # -- transactions ---------------------------------------------------------------------

    def run(self, work: Callable[[Connection], T], *, write: bool, snapshot: bool = False) -> T:
        """Run ``work`` in one transaction (see :meth:`Database.run`)."""
        psycopg = self._psycopg
        if write:
            begin: str | None = "BEGIN"
        elif snapshot:
            begin = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
        else:
            begin = None  # one statement is its own consistent transaction
        conflicts = 0
        dead = 0
        while True:
            connection = self._get()
            began = False
            try:
                try:
                    if begin is not None:
                        connection.execute(begin)
                        began = True
                    result = work(_Placeholders(connection))
                    if begin is not None:
                        connection.execute("COMMIT")
                    return result
                except BaseException:
                    if began and not connection.closed:
                        try:
                            connection.execute("ROLLBACK")
                        except psycopg.Error:
                            connection.close()
                    raise
                finally:
                    self._release(connection)
            except psycopg.errors.TransactionRollback as error:
                # Deadlock or serialisation failure: the server rolled it all back.
                conflicts += 1
                if conflicts > _RETRIES:
                    raise StoreUnavailable(_one_line(error)) from error
            except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                # A pooled connection killed by a server restart fails at its first use;
                # retry on another while nothing can have been committed.
                safe = not began or not write
                dead += 1
                if not (connection.closed and safe and dead <= self.pool_size):
                    raise StoreUnavailable(_one_line(error)) from error

    def close(self) -> None:
        """Close the idle connections now, the busy ones when they come back. Idempotent."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
