"""The database reached in as few round trips as a request needs.

On PostgreSQL each round trip is a wait for the worker, which answers one request at a time,
and work for the server. With SQLAlchemy's `pool_pre_ping`, a userinfo request made four:
`BEGIN`, the ping (`;`), its one `SELECT`, `ROLLBACK`. Two changes make it one:

- `install`: a pooled connection is pinged at checkout only when it has been idle for more than
  `PING_AFTER` seconds (HikariCP's `aliveBypassWindowMs`, 500 ms, is the same rule). A
  connection the database dropped while idle (a restart, a failover) is found and replaced
  before any request uses it; one dropped within the window fails its next request with the
  503 of a lost database, and the pool starts again from fresh connections.
- `read_one`: a statement that only reads, run on a connection in autocommit mode (no
  `BEGIN`, no `ROLLBACK`): for the read-only token lookups of userinfo and introspection. It
  reads what is committed, outside the request's session: only for requests that wrote
  nothing before it.
- `write_alone`: a write that is a transaction by itself (spending a code or a refresh
  token; saving the tokens of a grant with their fence and audit event, one statement on
  PostgreSQL), in autocommit mode too: one round trip instead of `BEGIN`, the statement,
  `COMMIT`.
- `adopt`: a row read so made the session's object, as if it had loaded it: a signed-in
  request's session with its account (identity.auth.sessions), a consent; `get_alone`: an
  object by its key, read so. A token request then spends, reads and saves in three round
  trips (seven before), an authorization request reads and writes its code in three or four
  (six before), and the session of every signed-in request is read without beginning a
  transaction (a page that reads nothing else: one round trip, three before).

And `holds_locks`: whether the request's transaction wrote or locked rows (any statement but
a plain SELECT), which identity.one_at_a_time asks before letting other requests run while
this one waits on another server.

Measured (bench/all.py, PostgreSQL, 2 workers): userinfo 938 -> 1,335/s, introspection
654 -> 1,189/s; PostgreSQL's CPU for userinfo 27% -> 12% of a core.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event, exc, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import make_transient_to_detached

from identity.extensions import db

PING_AFTER = 0.5  # seconds a pooled connection may sit idle and be used without a ping
_IDLE_SINCE = "idp.idle_since"
_LOCKS = "idp.holds_locks"


def install(engine: Engine) -> None:
    """Ping a connection at checkout only after PING_AFTER seconds idle (the engine is made
    without pool_pre_ping)."""
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection, record) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()
        record.info.pop(_LOCKS, None)

    @event.listens_for(engine, "after_cursor_execute")
    def _executed(connection, _cursor, statement, _parameters, _context, _many) -> None:
        if _LOCKS not in connection.info and _takes_locks(statement):
            connection.info[_LOCKS] = True

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _ended(connection) -> None:
        # A connection the database dropped is not asked: it has no info to give (its record
        # is cleared at checkin anyway).
        if not connection.invalidated:
            connection.info.pop(_LOCKS, None)

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, record, _proxy) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since <= PING_AFTER:
            return  # new, or in use a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                # The pool drops this connection and checks out another (SQLAlchemy's
                # documented "pessimistic" recipe).
                raise exc.DisconnectionError(str(error)) from error
            raise


def _takes_locks(statement: str) -> bool:
    """Anything but a plain SELECT: a write, DDL, or a SELECT ... FOR UPDATE."""
    head = statement.lstrip()[:6].upper()
    return head != "SELECT" or "FOR UPDATE" in statement.upper()


def holds_locks() -> bool:
    """Whether this request's transaction has written or locked rows (until it ends)."""
    if not db.session.registry.has():
        return False
    session = db.session()
    if not session.in_transaction():
        return False
    try:
        return bool(session.connection().info.get(_LOCKS))
    except exc.SQLAlchemyError:
        return True  # a connection the database dropped: wait as before, holding the worker


def write_alone(statement: Any, params: dict[str, Any]) -> Any:
    """Run `statement`, one write that is a transaction of its own (a conditional UPDATE ...
    RETURNING), committed when it returns; the first row it returns, or None. What the
    request's session read before it is committed first. On PostgreSQL in autocommit mode:
    one round trip instead of three (BEGIN, the statement, COMMIT), as atomic, since one
    statement is. On SQLite through the session: another connection's write would leave
    the session's read snapshot behind it, and SQLite refuses such a transaction its
    writes."""
    if db.engine.dialect.name == "sqlite":
        row = db.session.connection().execute(statement, params).first()
        db.session.commit()
        return row
    db.session.commit()
    with _autocommit() as connection:
        return connection.execute(statement, params).first()


def _autocommit():
    """A pooled connection in autocommit mode (PostgreSQL): no BEGIN, no COMMIT or ROLLBACK."""
    return db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")


def read_one(statement: Any, params: dict[str, Any]) -> Any:
    """The first row `statement` reads, or None, on a connection in autocommit mode (SQLite:
    a plain pooled connection, whose driver begins no transaction for a read; not the
    session's, whose bookkeeping and close at teardown cost a userinfo request a fifth of
    its CPU)."""
    if db.engine.dialect.name == "sqlite":
        with db.engine.connect() as connection:
            return connection.execute(statement, params).first()
    with _autocommit() as connection:
        return connection.execute(statement, params).first()


def get_alone(model: Any, key: int) -> Any:
    """`db.session.get(model, key)`, the row read as read_one() reads (PostgreSQL: one round
    trip, no BEGIN, and no COMMIT or ROLLBACK to end it) and adopted: the transaction the
    request may write in later has not begun. For requests that wrote nothing before it."""
    if db.engine.dialect.name == "sqlite":
        return db.session.get(model, key)
    mapper = inspect(model)
    loaded = db.session.identity_map.get(mapper.identity_key_from_primary_key((key,)))
    if loaded is not None:
        return loaded
    row = read_one(select(mapper.local_table).where(mapper.primary_key[0] == key), {})
    return None if row is None else adopt(model, row._mapping)


def adopt(model: Any, values: Any) -> Any:
    """The session's object for a row read outside it (`values`: its columns by name), as if
    the session had loaded it: attributes loaded, nothing to write. The one it holds already,
    if any."""
    mapper = inspect(model)
    key = tuple(values[c.name] for c in mapper.primary_key)
    loaded = db.session.identity_map.get(mapper.identity_key_from_primary_key(key))
    if loaded is not None:
        return loaded
    columns = mapper.local_table.c
    found = model(**{mapper.get_property_by_column(c).key: values[c.name] for c in columns})
    make_transient_to_detached(found)  # as if freshly loaded: no pending changes
    db.session.add(found)
    return found
