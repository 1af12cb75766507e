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
    ``answers`` holds every Answer."""

    def __init__(self, clients: int, send: Callable[[requests.Session, str, int], Answer]):
        self.answers: list[Answer] = []
        self._send = send
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(n,)) for n in range(clients)]

    def _client(self, client: int) -> None:
        session = requests.Session()
        number = 0
        while not self._stop.is_set():
            answer = self._send(session, username(number, prefix=username(client) + "x"), number)
            number += 1
            with self._lock:
                self.answers.append(answer)
            if answer.error:
                # The service is gone (after a shutdown): do not spin.
                time.sleep(0.05)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
