"""The PostgreSQL adapter: the only package that runs SQL."""

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# What store functions accept: a plain connection or one borrowed from a pool.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
