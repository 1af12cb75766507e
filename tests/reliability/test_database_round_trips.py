"""One round trip to PostgreSQL per request: the service's messages to the database, counted
on the wire by a proxy, hold one Sync (the end of one extended-query round trip, after which the
server answers ReadyForQuery) per request, and no ping.

sqlx-core 0.9.0's pool pings every connection handed back to it (``src/pool/connection.rs``,
``Floating::return_to_pool``; sqlx-postgres 0.9.0's ``PgConnection::ping`` is a Sync and a wait
for ReadyForQuery): a second round trip per statement, which the service's own connections
(service/src/store/postgres.rs) do without. Message framing from PostgreSQL 15's protocol 3.0
(the documentation's "Message Formats" of the Frontend/Backend Protocol: a type byte and a
length that counts itself, after the untyped start-up packets, SSLRequest and GSSENCRequest
among them).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter

import requests

REQUESTS = 40
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


class FrontendMessages:
    """Counts, by type, the messages PostgreSQL clients send; one parser per connection."""

    def __init__(self):
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def parser(self):
        buffer = bytearray()
        starting = [True]

        def feed(data: bytes) -> None:
            buffer.extend(data)
            while True:
                if starting[0]:
                    if len(buffer) < 8 or len(buffer) < int.from_bytes(buffer[:4], "big"):
                        return
                    length = int.from_bytes(buffer[:4], "big")
                    code = int.from_bytes(buffer[4:8], "big")
                    del buffer[:length]
                    starting[0] = code in (SSL_REQUEST, GSSENC_REQUEST)
                    continue
                if len(buffer) < 5 or len(buffer) < 1 + int.from_bytes(buffer[1:5], "big"):
                    return
                kind = chr(buffer[0])
                del buffer[: 1 + int.from_bytes(buffer[1:5], "big")]
                with self._lock:
                    self.counts[kind] += 1

        return feed

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


def test_each_request_is_one_round_trip_to_the_database(postgres_database, silencing_proxy, hello_service, measurement):
    messages = FrontendMessages()
    proxy = silencing_proxy(postgres_database.server.port, inspect=messages.parser)
    dsn = dataclasses.replace(postgres_database.server, port=proxy.port).dsn(postgres_database.name)
    # One connection: every statement after the first of its kind is already prepared on it.
    service = hello_service(dsn + "?sslmode=disable", DATABASE_MAX_CONNECTIONS="1")
    session = requests.Session()

    def put(name: str) -> None:
        session.put(service.url(f"/hello/{name}"), json={"dateOfBirth": "1990-05-17"}, timeout=10).raise_for_status()

    def get(name: str) -> None:
        session.get(service.url(f"/hello/{name}"), timeout=10).raise_for_status()

    put("Warm")
    get("Warm")
    before = messages.snapshot()
    for number in range(REQUESTS // 2):
        put(f"Name{chr(ord('a') + number % 26)}")
        get("Warm")
    sent = messages.snapshot() - before

    assert sent["S"] == REQUESTS, f"{sent['S']} round trips (Sync messages) for {REQUESTS} requests: {dict(sent)}"
    assert sent["B"] == REQUESTS and sent["E"] == REQUESTS, f"not one statement per request: {dict(sent)}"
    assert sent["P"] == 0 and sent["Q"] == 0, f"statements were parsed again, or sent as text: {dict(sent)}"
    measurement(f"round trips: {REQUESTS} requests, {sent['S']} Syncs, messages {dict(sorted(sent.items()))}")
