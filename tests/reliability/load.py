"""What the load of the reliability tests is made of: usernames and timed requests."""

from __future__ import annotations

import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests


def username(number: int, prefix: str = "") -> str:
    """A distinct valid username (ASCII letters only) for each ``number``."""
    letters = []
    while True:
        number, digit = divmod(number, 26)
        letters.append(string.ascii_lowercase[digit])
        if number == 0:
            break
    return prefix + "".join(reversed(letters))


@dataclass
class Answer:
    """One request: when it was sent and answered (monotonic seconds), and how it ended."""

    sent: float
    answered: float
    status: int | None
    error: str | None = None
    username: str = ""

    @property
    def seconds(self) -> float:
        return self.answered - self.sent


def timed(session: requests.Session, method: str, url: str, name: str, timeout: float, **kwargs) -> Answer:
    """Sends one request about user ``name``; a transport failure is recorded as ``error``,
    never raised."""
    sent = time.monotonic()
    try:
        response = session.request(method, url, timeout=timeout, **kwargs)
        # A complete answer: the whole body arrived (requests reads it before returning).
        return Answer(sent, time.monotonic(), response.status_code, username=name)
    except requests.RequestException as failure:
        return Answer(sent, time.monotonic(), None, f"{type(failure).__name__}: {failure}", username=name)


class Load:
    """``clients`` threads, each with its own kept-alive session, calling
    ``send(session, name, number)`` with a username no other call uses, until the block ends.
    ``answers`` holds every Answer; ``wait_for_answers(before, timeout)`` waits until every
    request sent before ``before`` has its answer."""

    def __init__(self, clients: int, send: Callable[[requests.Session, str, int], Answer]):
        self.answers: list[Answer] = []
        self._send = send
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(n,)) for n in range(clients)]
        # When each client's latest request was sent (a client sends one at a time).
        self._latest_sent = [0.0] * clients

    def _client(self, client: int) -> None:
        session = requests.Session()
        number = 0
        while not self._stop.is_set():
            self._latest_sent[client] = time.monotonic()
            answer = self._send(session, username(number, prefix=username(client) + "x"), number)
            number += 1
            with self._lock:
                self.answers.append(answer)
            if answer.error:
                # The service is gone (after a shutdown): do not spin.
                time.sleep(0.05)

    def wait_for_answers(self, before: float, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while min(self._latest_sent) < before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"requests sent before {before:.2f} still unanswered after {timeout}s")
            time.sleep(0.05)

    def answers_sent(self, start: float, end: float) -> list[Answer]:
        with self._lock:
            return [answer for answer in self.answers if start <= answer.sent < end]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def served_again(load: Load, since: float, bound: float, window: float, ok: tuple[int, ...], client_timeout: float):
    """The earliest time T, from ``since`` to ``since + bound`` in quarter seconds, such that at
    least 95 % of the requests sent in [T, T + ``window``) were answered with a status in
    ``ok``, and that share; (None, best share seen) when there is none. Waits for the answers."""
    best = 0.0
    start = since
    while start <= since + bound:
        load.wait_for_answers(start + window, timeout=window + client_timeout + 5)
        sent = load.answers_sent(start, start + window)
        share = sum(answer.status in ok for answer in sent) / len(sent) if sent else 0.0
        if share >= 0.95:
            return start, share
        best = max(best, share)
        start += 0.25
    return None, best
