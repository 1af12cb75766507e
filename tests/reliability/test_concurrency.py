"""Many concurrent saves for one username: every one succeeds, and the stored date is one of
those sent (one statement per save, so the last writer wins and nothing conflicts)."""

from __future__ import annotations

import datetime
import threading

import requests

WRITERS = 64


def test_concurrent_saves_for_one_username_all_succeed_and_one_wins(postgres_database, hello_service, measurement):
    # Saves of one row queue on its lock; the bounds are wide so that a slow, shared test
    # machine tests correctness here, not latency.
    service = hello_service(postgres_database.dsn, DATABASE_ACQUIRE_TIMEOUT="20s", REQUEST_TIMEOUT="30s")
    dates = [str(datetime.date(1950, 1, 1) + datetime.timedelta(days=7 * n)) for n in range(WRITERS)]
    start = threading.Barrier(WRITERS)
    statuses: dict[str, int] = {}

    def save(date: str) -> None:
        start.wait()
        answer = requests.put(service.url("/hello/Contested"), json={"dateOfBirth": date}, timeout=60)
        statuses[date] = answer.status_code

    threads = [threading.Thread(target=save, args=(date,)) for date in dates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert statuses == dict.fromkeys(dates, 204)
    stored = postgres_database.psql("select date_of_birth from users where username = 'Contested'")
    assert stored in dates
    assert postgres_database.psql("select count(*) from users") == "1"
    assert requests.get(service.url("/hello/Contested"), timeout=10).status_code == 200
    measurement(f"concurrency: {WRITERS} simultaneous saves of one username, all 204, stored {stored}")
