"""The PostgreSQL adapter: the only package that runs SQL, and the only one of the product that imports
asyncpg (a contract of `make lint`). What callers above it need of PostgreSQL is named here: the pool and
connection types, a plain connection, and the errors they tell apart."""

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Pool: TypeAlias = asyncpg.Pool
Connection: TypeAlias = asyncpg.Connection
# What store functions accept: a plain connection or one borrowed from a pool.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

connect = asyncpg.connect  # a plain connection, outside a pool (a leader lock, a benchmark's watcher)

# ---- Errors callers tell apart ---------------------------------------------------------------------------

UniqueViolation = asyncpg.UniqueViolationError
DeadlockDetected = asyncpg.DeadlockDetectedError
DataError = asyncpg.DataError  # a value PostgreSQL refuses (a bad input's 400, never a 500)
# PostgreSQL refusing the values of a write: a data exception (SQLSTATE class 22, e.g. a value out of range),
# an integrity constraint (23: a check, a unique index), a program limit (54: an index row too large). Retrying
# the same values fails the same way, unlike a lost connection or a serialization failure.
VALUE_REFUSALS: tuple[type[Exception], ...] = (
    asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, asyncpg.ProgramLimitExceededError)

# PostgreSQL away, or the connection to it lost or timed out: the same request may succeed later (an API
# answers 503).
UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError, TimeoutError,
    asyncpg.PostgresConnectionError,  # incl. ConnectionDoesNotExistError
    asyncpg.InterfaceError,  # incl. "connection is closed", released while in use
)
# A unit of work that failed for one of these is retried later, without limit: nothing about it is wrong.
TRANSIENT: tuple[type[Exception], ...] = (
    *UNAVAILABLE,
    asyncpg.exceptions.OperatorInterventionError,  # pg_terminate_backend, shutdown, cancel
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError,
)
# Any failure of the database or of a connection to it. InternalClientError: a connection the server
# terminated while idle can refuse its next query with "another operation is in progress" instead of a
# connection error; it is as lost.
ANY_ERROR: tuple[type[Exception], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
