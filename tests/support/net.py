"""Loopback networking for tests: free ports, waiting for a listener, an HTTP(S) server that
answers GETs through a function, and a TCP proxy that injects faults into the bytes it forwards
(interrupted and corrupted uploads and downloads).
"""

from __future__ import annotations

import socket
import ssl
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


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


def shut_down(*sockets: socket.socket, how: int = socket.SHUT_RDWR) -> None:
    """Shuts ``sockets`` down (``how``), ignoring those already closed."""
    for sock in sockets:
        try:
            sock.shutdown(how)
        except OSError:
            pass


class HttpServer:
    """An HTTP server on a free loopback port that answers every GET with ``respond(request)`` ->
    (status, body bytes), ``request`` being the BaseHTTPRequestHandler. Over TLS with
    ``certificate`` (a support.tls.ServerCertificate) when given, calling ``on_tls_name`` with the
    name each handshake asks for (SNI)."""

    def __init__(self, respond, certificate=None, on_tls_name=None):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                status, body = respond(self)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if certificate is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            with tempfile.TemporaryDirectory() as folder:
                cert, key = Path(folder) / "cert.pem", Path(folder) / "key.pem"
                cert.write_bytes(certificate.certificate)
                key.write_bytes(certificate.key)
                context.load_cert_chain(cert, key)
            if on_tls_name is not None:
                context.sni_callback = lambda sock, name, ctx: on_tls_name(name)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class FaultyProxy(threading.Thread):
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target_port``. For requests that start with PUT
    it closes the connection after ``cut_after`` bytes, or flips the byte at offset ``flip_at``
    (or, with ``garble_reply_md5``, changes the MD5 the reply reports); for media downloads
    (``alt=media``) it flips byte ``flip_reply_at`` of the reply. ``faults`` counts what it did;
    with ``limit`` it does no more than that many (a fault that a retry then gets past)."""

    def __init__(
        self,
        target_port: int,
        cut_after: int | None = None,
        flip_at: int | None = None,
        flip_reply_at: int | None = None,
        garble_reply_md5: bool = False,
        limit: int | None = None,
    ):
        super().__init__(daemon=True)
        self.limit = limit
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
                if is_put and self.cut_after is not None and offset + len(data) > self.cut_after and self._may():
                    upstream.sendall(data[: self.cut_after - offset])
                    self.faults += 1
                    # Drop both sides mid-body, as a network failure would.
                    shut_down(upstream, client)
                    return
                if is_put and self.flip_at is not None and offset <= self.flip_at < offset + len(data) and self._may():
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
                marker = data.find(b'"md5Hash": "') if garble_md5 and self._may() else -1
                if marker >= 0:
                    # Same length, another base64 digit: the JSON stays valid, the MD5 is wrong.
                    at = marker + len(b'"md5Hash": "')
                    data = data[:at] + (b"B" if data[at : at + 1] == b"A" else b"A") + data[at + 1 :]
                    garble_md5 = False
                    self.faults += 1
                if flip_at is not None and offset <= flip_at < offset + len(data) and self._may():
                    data = bytearray(data)
                    data[flip_at - offset] ^= 0xFF
                    data = bytes(data)
                    self.faults += 1
                offset += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            shut_down(sink, how=socket.SHUT_WR)

    def _may(self) -> bool:
        return self.limit is None or self.faults < self.limit

    def close(self) -> None:
        self.listener.close()


class SilencingProxy(threading.Thread):
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target_port``, and can make connections go
    silent the way a lost network path does: their bytes are dropped, in both directions, and
    neither side is closed (no FIN, no RST). ``silence_open()`` silences the connections open
    now, while new ones still pass; ``silence_new(True)`` silences new ones too, from their
    first byte (a database that accepts TCP connections but never answers); ``silence_new(False)``
    lets new ones pass again. ``accepted`` counts the connections made to it. ``inspect``, if
    given, makes for each connection a callable that sees every chunk the client sends."""

    def __init__(self, target_port: int, inspect=None):
        super().__init__(daemon=True)
        self.target_port = target_port
        self.inspect = inspect
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._silence_new = False
        self._open: list[threading.Event] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def silence_open(self) -> None:
        with self._lock:
            for silenced in self._open:
                silenced.set()

    def silence_new(self, silent: bool) -> None:
        with self._lock:
            self._silence_new = silent

    def run(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            silenced = threading.Event()
            with self._lock:
                self.accepted += 1
                self._open.append(silenced)
                if self._silence_new:
                    silenced.set()
            threading.Thread(target=self._serve, args=(client, silenced), daemon=True).start()

    def _serve(self, client: socket.socket, silenced: threading.Event) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets += [client, upstream]
        seen = self.inspect() if self.inspect else None
        threading.Thread(target=self._pipe, args=(upstream, client, silenced, None), daemon=True).start()
        self._pipe(client, upstream, silenced, seen)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, silenced: threading.Event, seen) -> None:
        try:
            while data := source.recv(65536):
                if silenced.is_set():
                    continue  # dropped, as on a dead path; the sender's kernel still saw it leave
                if seen:
                    seen(data)
                sink.sendall(data)
        except OSError:
            pass
        # The source closed. A silenced connection tells the other side nothing (its sockets
        # are closed by close()); an open one passes the close on.
        if not silenced.is_set():
            shut_down(sink, source)

    def close(self) -> None:
        """Stops accepting and closes every connection (the server's sessions end)."""
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()
