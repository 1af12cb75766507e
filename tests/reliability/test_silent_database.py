"""Database connections that go silent (packets dropped, no FIN, no RST: a zone lost with the
node, a dead load-balancer backend): the service never waits on one for longer than a
statement's bound, and serves again without a restart.

The rule encoded: within 15 s of every open database connection going silent, while the
database still accepts new connections, at least 95 % of requests succeed again. sqlx-core
0.9.0's pool (``src/pool/connection.rs``, ``Floating::return_to_pool``) pings each connection
handed back to it with no time bound while the connection keeps its pool permit, so there a
silent connection held its permit until TCP gave up (a quarter of an hour), and after
DATABASE_MAX_CONNECTIONS of them no request was served: the service runs its requests'
statements on connections it lends and takes back itself (service/src/store/postgres.rs).
The first case runs again through PgBouncer (Debian's 1.18, transaction pooling), with the
service's connections to the pooler going silent: there the pooler must also give back the
server connections that silent clients hold mid-transaction (idle_transaction_timeout, as
roles/postgres's Pooler sets it).

Both tests run the service with its default bounds (DATABASE_ACQUIRE_TIMEOUT 2 s,
REQUEST_TIMEOUT 5 s, 10 connections) under 16 clients of PUT and GET. Readiness does not follow
the database (every pod shares it; a load balancer whose backends all turn unready at once has
none left): /readyz answers 200 at once throughout and reports the database unavailable in its
body, checked every second within DATABASE_ACQUIRE_TIMEOUT.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time

import pytest
import requests

from support.pgbouncer import SERVICE_SETTINGS, migrate_directly, start_pgbouncer

from .load import Answer, Load, served_again, timed

CLIENTS = 16
REQUEST_TIMEOUT_SECONDS = 5  # the service's default
ACQUIRE_TIMEOUT_SECONDS = 2  # the service's default DATABASE_ACQUIRE_TIMEOUT
CLIENT_TIMEOUT_SECONDS = REQUEST_TIMEOUT_SECONDS + 5
RECOVERY_BOUND_SECONDS = 15
# Requests sent during this long must succeed (95 %) for the service to count as serving.
WINDOW_SECONDS = 2
SILENT_SECONDS = 5
WARM_UP_SECONDS = 1.5
SUCCESS = (200, 204)


def _behind_proxy(postgres_database, silencing_proxy, hello_service, bouncer=None, hello_binary=None):
    """The service, on ``postgres_database`` through a SilencingProxy, with a user saved. With
    ``bouncer`` (a PgBouncer in front of the database), the proxy is between the service and it:
    the connections that go silent are the service's to the pooler, as when a pooler's pod is
    lost with its zone."""
    settings = {}
    if bouncer is None:
        proxy = silencing_proxy(postgres_database.server.port)
        url = dataclasses.replace(postgres_database.server, port=proxy.port).dsn(postgres_database.name)
    else:
        migrate_directly(hello_binary, postgres_database.dsn)
        proxy = silencing_proxy(bouncer.port)
        url = bouncer.dsn(postgres_database.name).replace(f":{bouncer.port}/", f":{proxy.port}/")
        settings = SERVICE_SETTINGS
    service = hello_service(url, **settings)
    requests.put(service.url("/hello/Seeded"), json={"dateOfBirth": "1980-02-29"}, timeout=10).raise_for_status()
    return proxy, service


def _send(service):
    def send(session: requests.Session, name: str, number: int) -> Answer:
        if number % 2:
            return timed(session, "GET", service.url("/hello/Seeded"), name, timeout=CLIENT_TIMEOUT_SECONDS)
        return timed(
            session,
            "PUT",
            service.url(f"/hello/{name}"),
            name,
            timeout=CLIENT_TIMEOUT_SECONDS,
            json={"dateOfBirth": "1990-05-17"},
        )

    return send


@contextlib.contextmanager
def _under_load(service):
    """CLIENTS clients of PUT and GET on ``service``, warmed up (every connection open)."""
    with Load(CLIENTS, _send(service)) as load:
        time.sleep(WARM_UP_SECONDS)
        yield load


def _serving_again(load: Load, since: float, service, after: str) -> tuple[float, float]:
    """How soon after ``since`` the service served again, and the share of requests that
    succeeded then; fails past RECOVERY_BOUND_SECONDS."""
    recovered, share = served_again(
        load, since, RECOVERY_BOUND_SECONDS, WINDOW_SECONDS, SUCCESS, CLIENT_TIMEOUT_SECONDS
    )
    assert recovered is not None, (
        f"not serving {RECOVERY_BOUND_SECONDS}s after {after}: at best {share:.0%} of a "
        f"{WINDOW_SECONDS}s window's requests succeeded\n{service.log()[-3000:]}"
    )
    return recovered - since, share


@pytest.mark.slow
@pytest.mark.parametrize("through", ["postgres", "pgbouncer"])
def test_connections_that_go_silent_cost_one_statement_bound_each(
    postgres_database, silencing_proxy, hello_service, hello_binary, measurement, request, through
):
    bouncer = None
    if through == "pgbouncer":
        # Freeing the server connections that silent clients hold mid-transaction, as
        # roles/postgres's Pooler does (idle_transaction_timeout): without it, no request was
        # served again within the bound.
        bouncer = start_pgbouncer(
            postgres_database.server, pool_mode="transaction", pool_size=4, idle_transaction_timeout="5"
        )
        request.addfinalizer(bouncer.stop)
    proxy, service = _behind_proxy(postgres_database, silencing_proxy, hello_service, bouncer, hello_binary)

    with _under_load(service) as load:
        opened_before = proxy.accepted
        proxy.silence_open()
        silenced = time.monotonic()
        recovery, share = _serving_again(load, silenced, service, "the connections went silent")
    # Requests in flight then count: their statements were on the connections that went silent.
    after = [answer for answer in load.answers if answer.answered >= silenced]

    assert any(answer.status == 503 for answer in after), "no request met a silent connection"
    assert proxy.accepted > opened_before, "the service served again without opening a connection"
    assert service.process.poll() is None, "the service exited"
    assert not [answer for answer in load.answers if answer.status not in (*SUCCESS, 503)]
    measurement(
        f"silent connections ({through}): every open one went silent under {CLIENTS} clients "
        f"({opened_before} made so far); "
        f"{share:.0%} of requests succeeded again from {recovery:.2f}s after "
        f"(bound {RECOVERY_BOUND_SECONDS}s), {sum(a.status == 503 for a in after)} answered 503, same PID"
    )


@pytest.mark.slow
def test_a_silent_database_is_answered_with_503_in_time_and_served_again_when_it_returns(
    postgres_database, silencing_proxy, hello_service, measurement
):
    proxy, service = _behind_proxy(postgres_database, silencing_proxy, hello_service)

    with _under_load(service) as load:
        proxy.silence_new(True)
        proxy.silence_open()
        went_silent = time.monotonic()
        readiness = timed(requests.Session(), "GET", service.url("/readyz"), "", timeout=CLIENT_TIMEOUT_SECONDS)
        time.sleep(max(0.0, went_silent + SILENT_SECONDS - time.monotonic()))
        # Checked every second, each check bounded by DATABASE_ACQUIRE_TIMEOUT: by now at least
        # one check has failed.
        reported = requests.get(service.url("/readyz"), timeout=CLIENT_TIMEOUT_SECONDS)
        proxy.silence_new(False)
        came_back = time.monotonic()
        recovery, share = _serving_again(load, came_back, service, "the database answered again")
    answers = load.answers

    during = [answer for answer in answers if answer.sent > went_silent and answer.answered < came_back]
    assert during, "no request was answered while the database was silent"
    assert all(answer.status == 503 for answer in during), "a request succeeded with the database silent"
    unavailable = [answer for answer in answers if answer.status == 503]
    slowest = max(answer.seconds for answer in unavailable)
    assert slowest < REQUEST_TIMEOUT_SECONDS + 1, f"a 503 took {slowest:.2f}s, over REQUEST_TIMEOUT"
    assert readiness.status == 200, f"/readyz answered {readiness.status} with the database silent"
    # Waiting on the silent database would take a whole DATABASE_ACQUIRE_TIMEOUT.
    assert readiness.seconds < ACQUIRE_TIMEOUT_SECONDS, f"/readyz took {readiness.seconds:.2f}s"
    assert (reported.status_code, json.loads(reported.text)) == (
        200,
        {"status": "ready", "database": "unavailable"},
    ), f"/readyz {SILENT_SECONDS}s into the silence: {reported.status_code} {reported.text}"
    others = [answer for answer in answers if answer.status not in (*SUCCESS, 503)]
    assert not others, f"answers other than success and 503: {others[:5]}"
    assert service.process.poll() is None, "the service exited"
    measurement(
        f"silent database: {len(during)} requests during {SILENT_SECONDS}s of silence all 503 "
        f"(slowest 503 {slowest:.2f}s, /readyz {readiness.seconds:.2f}s); {share:.0%} succeeded again "
        f"from {recovery:.2f}s after it answered (bound {RECOVERY_BOUND_SECONDS}s), same PID"
    )
