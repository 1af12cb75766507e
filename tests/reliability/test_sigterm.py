"""SIGTERM under load: /readyz turns 503 at once, requests sent during the drain period are all
answered in full, and the process exits 0 within DRAIN_PERIOD + SHUTDOWN_TIMEOUT.

The one test of the drain under load (the service's own tests check the shutdown's parts: an
in-flight request finishing after the listener closes, the bound on shutdown)."""

from __future__ import annotations

import time

import requests

from .load import Answer, Load, timed

CLIENTS = 8
DRAIN_SECONDS = 3
SHUTDOWN_TIMEOUT_SECONDS = 5
# A request on a kept-alive connection that crosses the listener's closing can be cut by the
# close itself; requests sent this long before the drain ends must all be answered.
CLOSING_RACE_SECONDS = 0.2


def test_sigterm_under_load_answers_every_request_sent_while_draining(postgres_database, hello_service, measurement):
    # A wide pool wait: on a slow, shared test machine a 503 for a late connection would hide
    # what this tests (the drain), and is tested where it belongs (the database restart).
    service = hello_service(
        postgres_database.dsn,
        DRAIN_PERIOD=f"{DRAIN_SECONDS}s",
        SHUTDOWN_TIMEOUT=f"{SHUTDOWN_TIMEOUT_SECONDS}s",
        DATABASE_ACQUIRE_TIMEOUT="4s",
    )

    def send(session: requests.Session, name: str, number: int) -> Answer:
        # Half saves, half greetings (of users never saved: 404, still a database read).
        if number % 2 == 0:
            return timed(
                session, "PUT", service.url(f"/hello/{name}"), name, timeout=10, json={"dateOfBirth": "1990-05-17"}
            )
        return timed(session, "GET", service.url(f"/hello/{name}"), name, timeout=10)

    with Load(CLIENTS, send) as load:
        time.sleep(1)
        service.sigterm()
        signalled = time.monotonic()
        readyz_503_after = None
        with requests.Session() as probe:
            while readyz_503_after is None and time.monotonic() < signalled + DRAIN_SECONDS - 0.5:
                if probe.get(service.url("/readyz"), timeout=2).status_code == 503:
                    readyz_503_after = time.monotonic() - signalled
                else:
                    time.sleep(0.02)
        exit_code = service.wait(timeout=DRAIN_SECONDS + SHUTDOWN_TIMEOUT_SECONDS + 5)
        exited = time.monotonic()
    answers = load.answers

    drain_ended = signalled + DRAIN_SECONDS
    must_answer = [a for a in answers if a.sent < drain_ended - CLOSING_RACE_SECONDS]
    unanswered = [a for a in must_answer if a.status not in (200, 204, 404)]
    during_drain = [a for a in must_answer if a.sent >= signalled]
    failed = [a for a in answers if a.status is None]
    print(f"requests sent {len(answers)}, failed {len(failed)} (none of them before the drain period ended)")
    assert readyz_503_after is not None and readyz_503_after < 1, "/readyz must answer 503 at once after SIGTERM"
    assert not unanswered, f"{len(unanswered)} requests sent while serving got no complete answer: {unanswered[:3]}"
    assert len(during_drain) > CLIENTS, "too few requests were sent during the drain period to test it"
    assert exit_code == 0, f"hello exited {exit_code} after SIGTERM:\n{service.log()}"
    assert exited - signalled < DRAIN_SECONDS + SHUTDOWN_TIMEOUT_SECONDS, "hello outlived its shutdown bound"
    measurement(
        f"SIGTERM under load: {len(answers)} requests sent, {len(must_answer)} before the drain ended all answered "
        f"({len(during_drain)} during the drain), {len(failed)} failed after it; /readyz 503 after "
        f"{readyz_503_after:.2f}s; exit 0 after {exited - signalled:.2f}s"
    )
