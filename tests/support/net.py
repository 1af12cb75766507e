"""Loopback networking for tests: free ports, waiting for a listener, and a TCP proxy that
injects faults into the bytes it forwards (interrupted and corrupted uploads and downloads).
"""

from __future__ import annotations

import socket
import threading
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class FaultyProxy(threading.Thread):
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target_port``. For requests that start with PUT
    it closes the connection after ``cut_after`` bytes, or flips the byte at offset ``flip_at``
    (or, with ``garble_reply_md5``, changes the MD5 the reply reports); for media downloads
    (``alt=media``) it flips byte ``flip_reply_at`` of the reply. ``faults`` counts what it did."""

    def __init__(
        self,
        target_port: int,
        cut_after: int | None,
        flip_at: int | None,
        flip_reply_at: int | None,
        garble_reply_md5: bool,
    ):
        super().__init__(daemon=True)
        self.garble_reply_md5 = garble_reply_md5
        self.target_port = target_port
        self.cut_after = cut_after
        self.flip_at = flip_at
        self.flip_reply_at = flip_reply_at
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.faults = 0

    def run(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        offset = 0
        is_put = None
        with client, upstream:
            while True:
                try:
                    data = client.recv(65536)
                except OSError:
                    return
                if not data:
                    try:
                        upstream.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                if is_put is None:
                    is_put = data.startswith(b"PUT ")
                    flip = self.flip_reply_at if b"alt=media" in data.split(b"\r\n", 1)[0] else None
                    garble = self.garble_reply_md5 and is_put
                    threading.Thread(target=self._pipe, args=(upstream, client, flip, garble), daemon=True).start()
                if is_put and self.cut_after is not None and offset + len(data) > self.cut_after:
                    upstream.sendall(data[: self.cut_after - offset])
                    self.faults += 1
                    # Drop both sides mid-body, as a network failure would.
                    for sock in (upstream, client):
                        try:
                            sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                    return
                if is_put and self.flip_at is not None and offset <= self.flip_at < offset + len(data):
                    data = bytearray(data)
                    data[self.flip_at - offset] ^= 0xFF
                    data = bytes(data)
                    self.faults += 1
                offset += len(data)
                upstream.sendall(data)

    def _pipe(self, source: socket.socket, sink: socket.socket, flip_at: int | None, garble_md5: bool = False) -> None:
        offset = 0
        try:
            while data := source.recv(65536):
                marker = data.find(b'"md5Hash": "') if garble_md5 else -1
                if marker >= 0:
                    # Same length, another base64 digit: the JSON stays valid, the MD5 is wrong.
                    at = marker + len(b'"md5Hash": "')
                    data = data[:at] + (b"B" if data[at : at + 1] == b"A" else b"A") + data[at + 1 :]
                    garble_md5 = False
                    self.faults += 1
                if flip_at is not None and offset <= flip_at < offset + len(data):
                    data = bytearray(data)
                    data[flip_at - offset] ^= 0xFF
                    data = bytes(data)
                    self.faults += 1
                offset += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
