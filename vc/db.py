"""The database boundary: connections, transactions with retry, schema migrations.

Only this module imports PyMySQL. A transaction is a function ``fn(cur)`` run by
:meth:`Database.transaction`; when MariaDB answers deadlock (1213) or lock-wait timeout (1205) the
whole function is run again on a fresh transaction, so neither ever reaches a user.
"""

import glob
import logging
import os
import random
import re
import time
from typing import Callable, List, Optional, Tuple, TypeVar

from vc.errors import DatabaseError, SchemaError

LOG = logging.getLogger(__name__)
SQL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sql")
RETRY_CODES = (1205, 1213)  # lock wait timeout, deadlock
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

    def __init__(self, cfg, name: Optional[str] = None, max_retries: int = 20):
        self.cfg = cfg
        self.name = name or cfg.database.name
        self.max_retries = max_retries

    def connect(self, database=True):
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
        if d.unix_socket:
            kw["unix_socket"] = d.unix_socket
        else:
            kw["host"], kw["port"] = d.host, d.port
        try:
            conn = pymysql.connect(**kw)
            with conn.cursor() as cur:
                # READ COMMITTED: after the admission lock is taken, every read sees what the
                # previous lock holder committed (no stale REPEATABLE READ snapshot)
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            return conn
        except pymysql.err.OperationalError as e:
            where = d.unix_socket or "%s:%s" % (d.host, d.port)
            raise DatabaseError("cannot connect to the database %s at %s: %s"
                                % (self.name, where, e.args[-1])) from e

    def transaction(self, fn: Callable[..., T], conn=None) -> T:
        """Run ``fn(cursor)`` in one transaction and commit; on 1213/1205 roll back and run it
        again (with a short random back-off), up to ``max_retries`` times.

        ``fn`` must only touch the database (it may run more than once). Any exception rolls
        the transaction back and propagates.
        """
        import pymysql

        own = conn is None
        conn = conn or self.connect()
        try:
            for attempt in range(self.max_retries + 1):
                try:
                    with conn.cursor(pymysql.cursors.DictCursor) as cur:
                        result = fn(cur)
                    conn.commit()
                    return result
                except pymysql.err.OperationalError as e:
                    conn.rollback()
                    if e.args[0] in RETRY_CODES and attempt < self.max_retries:
                        LOG.info("transaction retry %d after %s", attempt + 1, e.args[0])
                        time.sleep(random.uniform(0.005, 0.02) * (attempt + 1))
                        continue
                    if e.args[0] in RETRY_CODES:
                        raise DatabaseError("the database stayed busy (%s); try again" %
                                            e.args[1]) from e
                    raise DatabaseError("database error: %s" % (e.args[-1],)) from e
                except BaseException:
                    conn.rollback()
                    raise
        finally:
            if own:
                conn.close()
        raise AssertionError("unreachable")  # pragma: no cover

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
