"""The suite's own PostgreSQL: loopback only, socket in its data directory, never root."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg

from ._pg import PgServer


async def test_server_listens_on_loopback_only_with_its_socket_in_the_data_dir(
    pg_cluster: PgServer, pg_url: str
) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        listen = await conn.fetchval("SHOW listen_addresses")
        sockets = await conn.fetchval("SHOW unix_socket_directories")
        user = await conn.fetchval("SELECT current_user")
    finally:
        await conn.close()
    assert listen == "127.0.0.1"
    assert Path(sockets) == pg_cluster.data
    assert (pg_cluster.data / f".s.PGSQL.{pg_cluster.port}").exists()
    assert user == "postgres"


def test_server_processes_never_run_as_root(pg_cluster: PgServer) -> None:
    procs = pg_cluster.processes()
    assert len(procs) >= 2  # the postmaster and its background processes
    owners = []
    for pid in procs:
        try:
            owners.append(os.stat(f"/proc/{pid}").st_uid)
        except FileNotFoundError:  # a short-lived backend (autovacuum worker) exited
            continue
    assert owners and 0 not in owners


async def test_killed_server_restarts_with_committed_rows(pg_private: PgServer) -> None:
    conn = await asyncpg.connect(pg_private.dsn)
    await conn.execute("CREATE TABLE t (v int)")
    await conn.execute("INSERT INTO t VALUES (1), (2)")
    pg_private.kill()
    conn.terminate()
    assert pg_private.processes() == []
    pg_private.start()
    conn = await asyncpg.connect(pg_private.dsn)
    try:
        assert await conn.fetchval("SELECT sum(v) FROM t") == 3
    finally:
        await conn.close()
