"""The database boundary: connections, transactions with retry, schema migrations.

Only this module imports PyMySQL. A transaction is a function ``fn(cur)`` run by
:meth:`Database.transaction`; when MariaDB answers deadlock (1213) or lock-wait timeout (1205) the
whole function is run again on a fresh transaction, so neither ever reaches a user.

**Galera** (two frontends on one cluster, README "Two frontends (Galera)"): a certification
failure is 1213 too, and it may come at any statement — a local transaction aborted by a
replicated write set — or at COMMIT; a node that is joining or not in the primary component
answers 1047. All three re-run the whole function (the commit is inside the retried block).
``[database] host`` may name several nodes, ``host[:port], host[:port], …``: a connection goes
to the first that answers, and a lost connection (2006/2013) or a 1047 before COMMIT moves to the
next one and re-runs the function there; a connection lost *during* COMMIT is an error (whether
it committed is unknown), never retried. On Galera every connection sets ``wsrep_sync_wait = 1``:
a read sees every transaction committed anywhere in the cluster before it (another frontend's
work), not only those applied on its own node so far.
"""

import glob
import logging
import os
import random
import re
import threading
import time
from typing import Callable, List, Optional, Tuple, TypeVar

from vc.errors import DatabaseError, SchemaError

LOG = logging.getLogger(__name__)
SQL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sql")
# lock wait timeout; deadlock (on Galera also a certification failure); WSREP not ready (Galera)
RETRY_CODES = (1205, 1213, 1047)
LOST_CODES = (2006, 2013)  # server gone away, lost connection: before COMMIT, retried elsewhere
CONNECT_CODES = (2002, 2003, 2006, 2013, 1047)  # cannot connect (or not ready): try the next host
T = TypeVar("T")


def migrations(sql_dir: str = SQL_DIR) -> List[Tuple[int, str, str]]:
    """``[(version, name, path)]`` for ``sql/NNN_name.sql``, in order."""
    out = []
    for path in sorted(glob.glob(os.path.join(sql_dir, "[0-9][0-9][0-9]_*.sql"))):
        base = os.path.basename(path)
        out.append((int(base[:3]), base[4:-4], path))
    return out


def split_statements(text: str) -> List[str]:
    """Split a migration into statements: ``;`` at the end of a line ends one. Comment lines
    are dropped. (Our migrations hold no procedures, so this is enough.)"""
    stmts, cur = [], []
    for line in text.splitlines():
        if re.match(r"^\s*--", line) or not line.strip():
            continue
        cur.append(line)
        if line.rstrip().endswith(";"):
            stmts.append("\n".join(cur).rstrip().rstrip(";"))
            cur = []
    if "".join(cur).strip():
        stmts.append("\n".join(cur))
    return stmts


class Database:
    """Connection factory for one configured database.

    :param cfg: a :class:`vc.config.Config`.
    :param name: database name override (tests use a throw-away database).
    """

    def __init__(self, cfg, name: Optional[str] = None, max_retries: int = 20,
                 reuse: bool = True):
        self.cfg = cfg
        # reuse: a transaction on its own connection leaves it to the next one of the same
        # thread (and process): a connect costs ~1-2 ms, a start runs ~35 transactions
        self.reuse = reuse
        self._idle = threading.local()
        self.name = name or cfg.database.name
        self.max_retries = max_retries
        self._current = 0         # index into endpoints(): the node that answered last
        self._galera = None       # learnt at the first connection: is the server a Galera node?
        self.retries = 0          # transactions re-run so far (bench/galera.py reads it)
        self.failovers = 0        # connections that moved to another node

    def endpoints(self) -> List[Tuple[str, object]]:
        """``[("socket", path)]`` or ``[(host, port), …]`` from ``[database] host`` (a comma
        separated list of ``host[:port]``; ``[v6addr]:port``)."""
        d = self.cfg.database
        if d.unix_socket:
            return [("socket", d.unix_socket)]
        out = []
        for item in (d.host or "").split(","):
            item = item.strip()
            if not item:
                continue
            m = re.match(r"^\[([^\]]+)\](?::(\d+))?$", item) or \
                re.match(r"^([^:]+)(?::(\d+))?$", item)
            if m:
                out.append((m.group(1), int(m.group(2) or d.port)))
            else:  # a bare IPv6 address
                out.append((item, d.port))
        return out

    def connect(self, database=True):
        """A connection to the first node that answers, starting with the one that answered
        last (one node: that one)."""
        import pymysql

        eps = self.endpoints()
        err = None
        for i in range(len(eps)):
            k = (self._current + i) % len(eps)
            try:
                conn = self._connect_to(eps[k], database)
            except pymysql.err.OperationalError as e:
                err = e
                if e.args[0] not in CONNECT_CODES or len(eps) == 1:
                    break
                LOG.warning("database node %s does not answer (%s): trying the next one",
                            self._where(eps[k]), e.args[-1])
                continue
            if k != self._current:
                self._current = k
                self.failovers += 1
            return conn
        raise DatabaseError("cannot connect to the database %s at %s: %s" % (
            self.name, ", ".join(self._where(ep) for ep in eps), err.args[-1])) from err

    @staticmethod
    def _where(ep) -> str:
        return ep[1] if ep[0] == "socket" else "%s:%s" % ep

    def _connect_to(self, ep, database):
        import pymysql

        d = self.cfg.database
        kw = dict(user=d.user, password=d.password, connect_timeout=d.connect_timeout,
                  charset="utf8mb4",
                  autocommit=False,
                  init_command="SET time_zone = '+00:00'",
                  # PyMySQL >= 1.2 builds an SSL context on every connect otherwise (~20 ms)
                  ssl_disabled=True)
        if database:
            kw["database"] = self.name
        if ep[0] == "socket":
            kw["unix_socket"] = ep[1]
        else:
            kw["host"], kw["port"] = ep
        conn = pymysql.connect(**kw)
        try:
            with conn.cursor() as cur:
                # READ COMMITTED: after the admission lock is taken, every read sees what the
                # previous lock holder committed (no stale REPEATABLE READ snapshot)
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                if self._galera is None:
                    try:
                        cur.execute("SELECT @@wsrep_on")
                        self._galera = bool(int(cur.fetchone()[0] or 0))
                    except pymysql.err.MySQLError:  # not a server built with wsrep
                        self._galera = False
                if self._galera:
                    # causal reads: what any node committed before this read is seen
                    cur.execute("SET SESSION wsrep_sync_wait = 1")
        except BaseException:
            conn.close()
            raise
        return conn

    def transaction(self, fn: Callable[..., T], conn=None) -> T:
        """Run ``fn(cursor)`` in one transaction and commit; on 1213/1205/1047 — at any
        statement or at COMMIT — roll back and run it again (with a short random back-off), up
        to ``max_retries`` times. On its own connection (``conn`` not given) a connection lost
        before COMMIT, or a node not ready (1047), reconnects — to the next node when
        ``[database] host`` names several — and runs it again.

        ``fn`` must only touch the database (it may run more than once). Any exception rolls
        the transaction back and propagates.
        """
        import pymysql

        own = conn is None
        keep = False
        conn = conn or self._take()
        try:
            for attempt in range(self.max_retries + 1):
                committing = False
                try:
                    with conn.cursor(pymysql.cursors.DictCursor) as cur:
                        result = fn(cur)
                    committing = True
                    conn.commit()
                    keep = own
                    return result
                except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as e:
                    code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
                    _rollback(conn)
                    lost = code in LOST_CODES or isinstance(e, pymysql.err.InterfaceError)
                    if lost and committing:
                        raise DatabaseError("the connection to the database was lost during "
                                            "COMMIT: the change may or may not have been made "
                                            "(%s)" % (e.args[-1] if e.args else e)) from e
                    if (code in RETRY_CODES or (lost and own)) and attempt < self.max_retries:
                        self.retries += 1
                        LOG.info("transaction retry %d after %s", attempt + 1, code or e)
                        if own and (lost or code == 1047):
                            conn = self._reconnect(conn)
                        time.sleep(random.uniform(0.005, 0.02) * (attempt + 1))
                        continue
                    if code in RETRY_CODES:
                        raise DatabaseError("the database stayed busy (%s); try again" %
                                            e.args[1]) from e
                    raise DatabaseError("database error: %s" % (e.args[-1],)) from e
                except BaseException as e:
                    _rollback(conn)
                    # fn's own error (a refusal, a ValueError): the connection is sound
                    keep = own and not isinstance(e, (pymysql.err.Error, KeyboardInterrupt))
                    raise
        finally:
            if keep and self.reuse:
                self._give(conn)
            elif own:
                try:
                    conn.close()
                except Exception:  # already closed (lost)
                    pass
        raise AssertionError("unreachable")  # pragma: no cover

    def _take(self):
        """The connection this thread left (``reuse``), else a new one. A connection the
        server dropped meanwhile fails at its first statement as a lost one, which
        :meth:`transaction` reconnects and re-runs."""
        held = getattr(self._idle, "conn", None)
        self._idle.conn = None
        if held is not None and held[0] == os.getpid():
            return held[1]
        return self.connect()

    def _give(self, conn) -> None:
        old = getattr(self._idle, "conn", None)
        self._idle.conn = (os.getpid(), conn)
        if old is not None and old[0] == os.getpid():
            old[1].close()

    def _reconnect(self, conn):
        """A fresh connection after ``conn`` was lost or its node was not ready: to the next
        node (when there are several), else the same one again."""
        try:
            conn.close()
        except Exception:
            pass
        if len(self.endpoints()) > 1:
            self._current = (self._current + 1) % len(self.endpoints())
        return self.connect()

    def query(self, sql: str, args=()) -> list:
        """One read-only statement in its own transaction; rows as dicts."""

        def run(cur):
            cur.execute(sql, args)
            return list(cur.fetchall())

        return self.transaction(run)

    # ---------------------------------------------------------------- schema
    def schema_version(self, conn=None) -> int:
        import pymysql

        own = conn is None
        conn = conn or self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
                return int(cur.fetchone()[0])
        except pymysql.err.ProgrammingError as e:
            if e.args[0] == 1146:  # no such table
                return 0
            raise
        finally:
            conn.rollback()
            if own:
                conn.close()

    def check_schema(self):
        """Refuse to work on a database whose schema is older (or newer) than this code."""
        want = migrations()[-1][0]
        have = self.schema_version()
        if have < want:
            raise SchemaError("database %s has schema version %d, this VC needs %d: run "
                              "'sbin/vc_ctl.py db upgrade'" % (self.name, have, want))
        if have > want:
            raise SchemaError("database %s has schema version %d, newer than this VC (%d): "
                              "upgrade VC" % (self.name, have, want))

    def upgrade(self, now) -> List[str]:
        """Apply every migration not yet recorded in ``schema_version``; idempotent.

        A named lock keeps two upgrades from interleaving. Returns the names applied.
        """
        conn = self.connect()
        applied = []
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT GET_LOCK('vc_schema_upgrade', 60)")
                if cur.fetchone()[0] != 1:
                    raise DatabaseError("another schema upgrade holds the lock")
                cur.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INT NOT NULL PRIMARY KEY,"
                    " name VARCHAR(128) NOT NULL, applied_at DATETIME NOT NULL)"
                    " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
                conn.commit()
                have = self.schema_version(conn)
                for version, name, path in migrations():
                    if version <= have:
                        continue
                    with open(path, encoding="utf-8") as f:
                        for stmt in split_statements(f.read()):
                            cur.execute(stmt)
                    cur.execute("INSERT INTO schema_version (version, name, applied_at) "
                                "VALUES (%s, %s, %s)", (version, name, naive_utc(now)))
                    conn.commit()
                    applied.append("%03d_%s" % (version, name))
                    LOG.info("schema: applied %03d_%s", version, name)
                cur.execute("SELECT RELEASE_LOCK('vc_schema_upgrade')")
        finally:
            conn.close()
        return applied


def _rollback(conn) -> None:
    """Roll back; a connection that is gone has nothing to roll back."""
    try:
        conn.rollback()
    except Exception:
        pass


def naive_utc(dt, micro=False):
    """An aware datetime as the naive UTC value stored in DATETIME columns (whole seconds,
    truncated; ``micro=True`` keeps the microseconds for DATETIME(6) columns)."""
    from datetime import timezone

    if dt.tzinfo is None:
        raise ValueError("naive datetime given where an aware one is required")
    out = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return out if micro else out.replace(microsecond=0)


def aware_utc(dt):
    """A DATETIME column value (naive UTC) as an aware datetime."""
    from datetime import timezone

    return None if dt is None else dt.replace(tzinfo=timezone.utc)
