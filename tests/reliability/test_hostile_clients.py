"""Clients that try to exhaust the service rather than use it, against the release binary on
loopback: invented methods and paths (metric series), connections that send a request head
slowly or not at all (slowloris), thousands of idle connections (memory), and a client stalled
at shutdown. Each bound here is a setting of the service (docs/service.md)."""

from __future__ import annotations

import http.client
import random
import re
import socket
import string
import time
from pathlib import Path

import pytest
import requests

HEADER_READ_TIMEOUT_SECONDS = 1
KEEP_ALIVE_TIMEOUT_SECONDS = 3
# A request line and one header of a request whose head never ends.
HALF_A_HEAD = b"GET /hello/Ann HTTP/1.1\r\nHost: hello\r\nX-Padding: "


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'hello.db'}?mode=rwc"


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB$", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) * 1024


def open_sockets(pid: int) -> set[str]:
    """The sockets the process holds open, by inode: a later set minus an earlier one counts
    the sockets opened meanwhile, whatever closed meanwhile."""
    fds = Path(f"/proc/{pid}/fd")
    links = (fd.readlink().name for fd in fds.iterdir() if fd.is_symlink())
    return {link for link in links if link.startswith("socket:")}


def series(metrics: str) -> set[str]:
    """Each sample's name and labels, without its value."""
    return {line.rsplit(" ", 1)[0] for line in metrics.splitlines() if line and not line.startswith("#")}


def closed_after(sock: socket.socket, limit: float) -> float | None:
    """Seconds until the peer closes ``sock`` (reading and dropping whatever it sends), or None
    if it is still open after ``limit``."""
    started = time.monotonic()
    sock.settimeout(0.05)
    while time.monotonic() - started < limit:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - started
    return None


def answered(sock: socket.socket, request: bytes) -> bytes:
    """The status line of the answer to ``request`` on the open connection ``sock``."""
    sock.settimeout(5)
    sock.sendall(request)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed before an answer"
        data += chunk
    return data.split(b"\r\n", 1)[0]


def test_invented_methods_and_paths_add_no_metric_series(hello_service, sqlite_url, measurement):
    service = hello_service(sqlite_url)
    host, port = "127.0.0.1", service.port
    connection = http.client.HTTPConnection(host, port, timeout=10)

    def send(method: str, path: str) -> int:
        connection.request(method, path)
        response = connection.getresponse()
        response.read()
        return response.status

    # Every series a client can reach, once: each route, an unknown path, an unknown method.
    for method, path in [
        ("GET", "/hello/Ann"),
        ("PUT", "/hello/Ann"),
        ("DELETE", "/hello/Ann"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/openapi.json"),
        ("GET", "/nowhere"),
        ("BREW", "/hello/Ann"),
        ("BREW", "/nowhere"),
    ]:
        send(method, path)
    before = requests.get(service.metrics_url(), timeout=10).text

    rng = random.Random(20261129)
    invented = 3000
    for number in range(invented):
        method = "".join(rng.choices(string.ascii_uppercase, k=40 if number % 100 else 4000))
        path = "/" + "".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(1, 200)))
        status = send(method, path if number % 2 else "/hello/" + path[1:])
        assert status in (400, 404, 405), f"{method[:20]}… {path}: {status}"

    connection.close()
    after = requests.get(service.metrics_url(), timeout=10).text
    assert series(after) == series(before), sorted(series(after) - series(before))[:5]
    # The counters' digits grow; the text does not, beyond them.
    assert len(after) - len(before) < 1024, f"/metrics grew from {len(before)} to {len(after)} bytes"
    assert 'method="other"' in after and 'route="other"' in after
    measurement(f"/metrics after {invented} invented methods and paths: {len(before)} → {len(after)} bytes")


def test_a_request_head_sent_slowly_or_not_at_all_is_cut_at_the_header_read_timeout(hello_service, sqlite_url):
    service = hello_service(
        sqlite_url,
        HEADER_READ_TIMEOUT=f"{HEADER_READ_TIMEOUT_SECONDS}s",
        KEEP_ALIVE_TIMEOUT=f"{KEEP_ALIVE_TIMEOUT_SECONDS}s",
    )
    silent = socket.create_connection(("127.0.0.1", service.port))
    slow = socket.create_connection(("127.0.0.1", service.port))
    slow.sendall(HALF_A_HEAD)
    started = time.monotonic()
    slow_closed = None
    # A byte every 100 ms: each read is far inside any per-read timeout, the head never ends.
    slow.settimeout(0.1)
    while slow_closed is None and time.monotonic() - started < HEADER_READ_TIMEOUT_SECONDS + 3:
        try:
            slow.sendall(b"x")
            if slow.recv(65536) == b"":
                slow_closed = time.monotonic() - started
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            slow_closed = time.monotonic() - started
    silent_closed = closed_after(silent, 1)
    assert slow_closed is not None, "a connection sending its head a byte at a time was still open"
    assert HEADER_READ_TIMEOUT_SECONDS - 0.1 <= slow_closed <= HEADER_READ_TIMEOUT_SECONDS + 2, slow_closed
    assert silent_closed is not None, "a connection that sent nothing was still open past the header read timeout"


def test_an_idle_kept_alive_connection_lasts_the_keep_alive_timeout_not_the_header_read_timeout(
    hello_service, sqlite_url
):
    service = hello_service(
        sqlite_url,
        HEADER_READ_TIMEOUT=f"{HEADER_READ_TIMEOUT_SECONDS}s",
        KEEP_ALIVE_TIMEOUT=f"{KEEP_ALIVE_TIMEOUT_SECONDS}s",
    )
    with socket.create_connection(("127.0.0.1", service.port)) as kept:
        assert answered(kept, b"GET /healthz HTTP/1.1\r\nHost: hello\r\n\r\n") == b"HTTP/1.1 200 OK"
        # Past the header read timeout, idle between requests: still open, and still served.
        assert closed_after(kept, HEADER_READ_TIMEOUT_SECONDS + 0.5) is None
        assert answered(kept, b"GET /healthz HTTP/1.1\r\nHost: hello\r\n\r\n") == b"HTTP/1.1 200 OK"
        # Then idle for the keep-alive timeout: closed.
        idle = closed_after(kept, KEEP_ALIVE_TIMEOUT_SECONDS + 2)
    assert idle is not None, "an idle connection outlived KEEP_ALIVE_TIMEOUT"
    assert idle >= KEEP_ALIVE_TIMEOUT_SECONDS - 0.5, idle


def test_a_request_head_over_max_header_bytes_is_refused(hello_service, sqlite_url):
    service = hello_service(sqlite_url, MAX_HEADER_BYTES="8192")
    with socket.create_connection(("127.0.0.1", service.port)) as client:
        long_header = b"GET /healthz HTTP/1.1\r\nHost: hello\r\nX-Padding: " + b"x" * 9000 + b"\r\n\r\n"
        assert answered(client, long_header) == b"HTTP/1.1 431 Request Header Fields Too Large"
    with socket.create_connection(("127.0.0.1", service.port)) as client:
        under = b"GET /healthz HTTP/1.1\r\nHost: hello\r\nX-Padding: " + b"x" * 7000 + b"\r\n\r\n"
        assert answered(client, under) == b"HTTP/1.1 200 OK"


def test_thousands_of_idle_connections_hold_only_max_connections_and_bounded_memory(
    hello_service, sqlite_url, measurement
):
    max_connections = 100
    flood = 3000
    # Long enough that no connection of the flood is closed while the test looks.
    service = hello_service(sqlite_url, MAX_CONNECTIONS=str(max_connections), HEADER_READ_TIMEOUT="60s")
    earlier = socket.create_connection(("127.0.0.1", service.port))
    assert answered(earlier, b"GET /healthz HTTP/1.1\r\nHost: hello\r\n\r\n") == b"HTTP/1.1 200 OK"
    sockets_before = open_sockets(service.pid)
    rss_before = rss_bytes(service.pid)

    # Each holds an unfinished head of 12 KiB (under MAX_HEADER_BYTES), which the service must
    # buffer for each connection it accepts.
    head = HALF_A_HEAD + b"x" * 12 * 1024
    clients = []
    try:
        for _ in range(flood):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", service.port))
            clients.append(client)
        time.sleep(1)
        for client in clients:
            try:
                client.send(head)
            except OSError:
                pass  # not yet connected (beyond the listen backlog): still waiting
        time.sleep(2)
        held = len(open_sockets(service.pid) - sockets_before)
        grown = rss_bytes(service.pid) - rss_before
        # Old connections are not starved by the wait of new ones.
        assert answered(earlier, b"GET /healthz HTTP/1.1\r\nHost: hello\r\n\r\n") == b"HTTP/1.1 200 OK"
    finally:
        for client in clients:
            client.close()
        earlier.close()
    # hyper's read buffer of each accepted connection (up to MAX_HEADER_BYTES, 16 KiB), twice
    # over for the allocator, and 8 MiB for everything else.
    bound = max_connections * 2 * 16 * 1024 + 8 * 1024 * 1024
    assert grown < bound, f"{flood} idle connections ({held} held) grew the service by {grown} bytes (bound {bound})"
    # The earlier connection holds one of the slots.
    assert held == max_connections - 1, f"{held} connections of the flood held, MAX_CONNECTIONS={max_connections}"
    # Once the flood is gone, the service accepts again.
    with socket.create_connection(("127.0.0.1", service.port)) as later:
        assert answered(later, b"GET /healthz HTTP/1.1\r\nHost: hello\r\n\r\n") == b"HTTP/1.1 200 OK"
    measurement(
        f"{flood} connections with 12 KiB unfinished heads, MAX_CONNECTIONS={max_connections}: "
        f"{held} held, RSS +{grown / 2**20:.1f} MiB"
    )


def test_a_client_stalled_in_its_request_head_does_not_hold_the_shutdown(hello_service, sqlite_url):
    shutdown_timeout = 5
    service = hello_service(sqlite_url, DRAIN_PERIOD="0s", SHUTDOWN_TIMEOUT=f"{shutdown_timeout}s")
    stalled = socket.create_connection(("127.0.0.1", service.port))
    stalled.sendall(HALF_A_HEAD)
    idle = socket.create_connection(("127.0.0.1", service.port))
    assert answered(idle, b"GET /healthz HTTP/1.1\r\nHost: hello\r\n\r\n") == b"HTTP/1.1 200 OK"
    time.sleep(0.2)
    started = time.monotonic()
    service.sigterm()
    exit_code = service.wait(timeout=shutdown_timeout + 5)
    took = time.monotonic() - started
    stalled.close()
    idle.close()
    assert exit_code == 0, f"hello exited {exit_code}:\n{service.log()}"
    assert took < shutdown_timeout / 2, f"shutdown took {took:.1f}s with a stalled client"
