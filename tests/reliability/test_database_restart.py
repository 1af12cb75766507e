"""PostgreSQL restarts under write load: nothing acknowledged is lost, the outage is answered
with 503 within the request timeout, and the same process serves again soon after; the same
through PgBouncer in transaction pooling (Debian's 1.18, so the service without a statement
cache: tests/test_pgbouncer_statements.py), which keeps the service's connections open while its
own to PostgreSQL break and come back."""

from __future__ import annotations

import time

import pytest
import requests

from support.pgbouncer import SERVICE_SETTINGS, migrate_directly, start_pgbouncer

from .load import Answer, Load, timed

WRITERS = 8
REQUEST_TIMEOUT_SECONDS = 3
OUTAGE_SECONDS = 4
# Time after PostgreSQL accepts connections again within which writes must succeed again
# (a few seconds, allowing for a slow, shared test machine).
RECOVERY_BOUND_SECONDS = 10


@pytest.mark.parametrize("through", ["postgres", "pgbouncer"])
def test_a_database_restart_under_load_loses_no_acknowledged_write(
    restartable_postgres, hello_binary, hello_service, measurement, request, through
):
    server = restartable_postgres.server
    url, settings = server.dsn(), {}
    if through == "pgbouncer":
        # Retrying a failed server login after 1s, as roles/postgres's Pooler does (PgBouncer's
        # default of 15s would hold the service back that long after PostgreSQL returns).
        bouncer = start_pgbouncer(server, pool_mode="transaction", pool_size=4, server_login_retry="1")
        request.addfinalizer(bouncer.stop)
        migrate_directly(hello_binary, url)
        url, settings = bouncer.dsn("postgres"), SERVICE_SETTINGS
    service = hello_service(
        url,
        **settings,
        DATABASE_CONNECT_TIMEOUT="1s",
        DATABASE_ACQUIRE_TIMEOUT="1s",
        REQUEST_TIMEOUT=f"{REQUEST_TIMEOUT_SECONDS}s",
    )

    def write(session: requests.Session, name: str, _number: int) -> Answer:
        return timed(
            session,
            "PUT",
            service.url(f"/hello/{name}"),
            name,
            timeout=REQUEST_TIMEOUT_SECONDS + 5,
            json={"dateOfBirth": "1990-05-17"},
        )

    with Load(WRITERS, write) as load:
        time.sleep(2)
        restartable_postgres.stop_server()
        went_down = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        restarting = time.monotonic()
        restartable_postgres.start_server()
        came_back = time.monotonic()
        time.sleep(RECOVERY_BOUND_SECONDS + 1)
    answers = load.answers

    acknowledged = {answer.username for answer in answers if answer.status == 204}
    unavailable = [answer for answer in answers if answer.status == 503]
    others = [answer for answer in answers if answer.status not in (204, 503)]
    assert not others, f"answers other than 204 and 503: {others[:5]}"
    assert unavailable, "no request saw the outage: the database was not down while writers ran"
    slowest = max(answer.seconds for answer in unavailable)
    assert slowest < REQUEST_TIMEOUT_SECONDS + 1, f"a 503 took {slowest:.2f}s, over REQUEST_TIMEOUT"
    during_outage = [a for a in answers if a.sent > went_down and a.answered < restarting]
    assert during_outage and all(a.status == 503 for a in during_outage), "a write succeeded with the database down"

    first_success_after = min((a.answered for a in answers if a.status == 204 and a.sent >= came_back), default=None)
    assert first_success_after is not None, "no write succeeded after the database came back"
    recovery = first_success_after - came_back
    assert recovery < RECOVERY_BOUND_SECONDS, f"writes succeeded again only {recovery:.2f}s after the database returned"

    assert service.process.poll() is None, f"the service exited during the outage:\n{service.log()}"
    stored = set(server.psql("select username from users").split())
    lost = acknowledged - stored
    assert not lost, f"{len(lost)} acknowledged writes are missing, such as {sorted(lost)[:5]}"
    measurement(
        f"database restart ({through}): {len(answers)} writes, {len(acknowledged)} acknowledged, 0 lost, "
        f"{len(unavailable)} answered 503 (slowest {slowest:.2f}s), served again {recovery:.2f}s after "
        f"PostgreSQL returned, same PID {service.pid}"
    )
