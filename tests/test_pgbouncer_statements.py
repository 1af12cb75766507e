"""The service through PgBouncer older than 1.21 in transaction pooling: a real PgBouncer from
Debian (1.18) in front of the tests' PostgreSQL.

PgBouncer hands a server connection to another client at the end of every transaction, and
before 1.21 (max_prepared_statements, PgBouncer's changelog for 1.21.0) it does not carry
protocol-level prepared statements from one server connection to another. sqlx-postgres 0.9.0
names the statements it caches (``sqlx_s_<n>``, ``src/connection/executor.rs``), so with its cache
the service's statements fail there; with DATABASE_STATEMENT_CACHE_CAPACITY=0 it sends them
unnamed, each inside a transaction of its own, and they work. Production runs PgBouncer 1.25
with max_prepared_statements (roles/postgres), where the cache stays on.
"""

from concurrent.futures import ThreadPoolExecutor
from string import ascii_lowercase

import pytest
import requests

from support.pgbouncer import migrate_directly, start_pgbouncer


@pytest.fixture(scope="module")
def pgbouncer(postgres_server):
    # Two server connections for the service's eight: clients take turns on them.
    bouncer = start_pgbouncer(postgres_server, pool_mode="transaction", pool_size=2)
    yield bouncer
    bouncer.stop()


def failures_under_load(service, requests_per_worker=25, workers=8):
    """Saves and reads birthdays from ``workers`` threads at once; returns the failed answers."""

    def work(worker):
        failed = []
        for i in range(requests_per_worker):
            name = f"pooled{ascii_lowercase[worker]}{ascii_lowercase[i % 26]}{ascii_lowercase[i // 26]}"
            saved = requests.put(service.url(f"/hello/{name}"), json={"dateOfBirth": "1990-05-17"}, timeout=10)
            read = requests.get(service.url(f"/hello/{name}"), timeout=10)
            failed += [r.status_code for r in (saved, read) if r.status_code >= 400]
        return failed

    with ThreadPoolExecutor(workers) as pool:
        return [status for failed in pool.map(work, range(workers)) for status in failed]


@pytest.mark.parametrize("capacity, works", [("0", True), ("100", False)])
def test_the_statement_cache_setting_decides_whether_transaction_pooling_works(
    hello_binary, hello_service, postgres_database, pgbouncer, capacity, works
):
    assert pgbouncer.version < (1, 21), "this test needs a PgBouncer without prepared statements"
    # The schema first, straight to PostgreSQL (the migrations are not what is tested here).
    migrate_directly(hello_binary, postgres_database.dsn)
    service = hello_service(
        pgbouncer.dsn(postgres_database.name),
        MIGRATE_ON_START="false",
        DATABASE_MAX_CONNECTIONS="8",
        DATABASE_STATEMENT_CACHE_CAPACITY=capacity,
    )
    failed = failures_under_load(service)
    if works:
        assert failed == [], service.log()[-3000:]
    else:
        # The fixture enforces what PgBouncer 1.18 does: named statements break.
        assert failed, "named prepared statements worked through transaction pooling"
        assert "prepared statement" in service.log()
