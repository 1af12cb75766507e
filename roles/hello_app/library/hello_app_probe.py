#!/usr/bin/python
"""Ansible module hello_app_probe: requests through an address for a window, counting failures."""

from __future__ import annotations

import http.client
import ssl
import time
from datetime import UTC, datetime

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: hello_app_probe
short_description: Sends requests through an address for a window and counts every failure
description:
  - Sends C(GET path) to O(address) every O(interval_seconds) for O(window_seconds), each on a new
    connection, with O(hostname) as the Host header and, over HTTPS, as the name the server's
    certificate is verified against and the name sent in the TLS handshake (SNI), the way a user's
    client that resolved O(hostname) to O(address) asks.
  - A request fails when it gets no answer within O(timeout_seconds), another status than
    O(expect_status), or a body without O(expect_body). The module fails when any request failed,
    and lists the failures with their times.
  - Used by roles/hello_app after a release's switch, through the Gateway's address (what users
    reach).
options:
  address:
    description: Host or host:port to connect to (an IPv6 address in brackets).
    type: str
    required: true
  scheme:
    description: http or https; the port defaults to 80 or 443.
    type: str
    choices: [http, https]
    default: http
  hostname:
    description: The Host header, and the TLS name over HTTPS; empty sends the address's host.
    type: str
    default: ""
  path:
    description: The path to request.
    type: str
    required: true
  window_seconds:
    description: How long to send requests.
    type: float
    required: true
  interval_seconds:
    description: Pause between two requests.
    type: float
    default: 0.2
  timeout_seconds:
    description: Bound of one request, connection included.
    type: float
    default: 5
  expect_status:
    description: The status every answer must have.
    type: int
    default: 200
  expect_body:
    description: Text every answer's body must contain (empty checks nothing).
    type: str
    default: ""
  ca_path:
    description: A PEM file of the authorities to trust over HTTPS; empty trusts the system's.
    type: str
    default: ""
"""

RETURN = r"""
requests:
  description: Requests sent.
  type: int
failures:
  description: Requests that failed.
  type: int
failure_lines:
  description: The first 20 failures, each with its UTC time.
  type: list
"""


def split_address(address, scheme):
    default = 443 if scheme == "https" else 80
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default
    if address.count(":") == 1:
        host, port = address.split(":")
        return host, int(port)
    return address, default


class _Connection(http.client.HTTPConnection):
    """Connects to (host, port) whatever the Host header; over TLS, verifies tls_name."""

    def __init__(self, host, port, timeout, context=None, tls_name=None):
        super().__init__(host, port, timeout=timeout)
        self._context = context
        self._tls_name = tls_name

    def connect(self):
        super().connect()
        if self._context is not None:
            self.sock = self._context.wrap_socket(self.sock, server_hostname=self._tls_name)


def request(params, host, port, context):
    name = params["hostname"] or host
    connection = _Connection(host, port, params["timeout_seconds"], context, name)
    try:
        connection.request("GET", params["path"], headers={"Host": name, "Connection": "close"})
        answer = connection.getresponse()
        body = answer.read(65536).decode("utf-8", "replace")
    except (TimeoutError, OSError, http.client.HTTPException) as error:
        return f"no answer: {type(error).__name__}: {error}"
    finally:
        connection.close()
    if answer.status != params["expect_status"]:
        return f"answered {answer.status}, expected {params['expect_status']}: {body[:200]}"
    if params["expect_body"] and params["expect_body"] not in body:
        return f"answered {answer.status} without {params['expect_body']!r}: {body[:200]}"
    return None


def main():
    module = AnsibleModule(
        argument_spec={
            "address": {"type": "str", "required": True},
            "scheme": {"type": "str", "choices": ["http", "https"], "default": "http"},
            "hostname": {"type": "str", "default": ""},
            "path": {"type": "str", "required": True},
            "window_seconds": {"type": "float", "required": True},
            "interval_seconds": {"type": "float", "default": 0.2},
            "timeout_seconds": {"type": "float", "default": 5},
            "expect_status": {"type": "int", "default": 200},
            "expect_body": {"type": "str", "default": ""},
            "ca_path": {"type": "str", "default": ""},
        },
        supports_check_mode=False,
    )
    params = module.params
    host, port = split_address(params["address"], params["scheme"])
    context = None
    if params["scheme"] == "https":
        context = ssl.create_default_context(cafile=params["ca_path"] or None)
    requests = 0
    failures = []
    end = time.monotonic() + params["window_seconds"]
    while True:  # at least one request, however short the window
        requests += 1
        failure = request(params, host, port, context)
        if failure:
            stamp = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
            failures.append(f"{stamp} GET {params['path']} {failure}")
        if time.monotonic() + params["interval_seconds"] >= end:
            break
        time.sleep(params["interval_seconds"])
    result = {"changed": False, "requests": requests, "failures": len(failures), "failure_lines": failures[:20]}
    target = f"{params['scheme']}://{params['hostname'] or host} through {host}:{port}"
    if failures:
        module.fail_json(
            msg=f"{len(failures)} of {requests} requests to {target} failed in {params['window_seconds']:g} s; "
            f"the first: {failures[0]}",
            **result,
        )
    module.exit_json(msg=f"{requests} requests to {target} in {params['window_seconds']:g} s, none failed", **result)


if __name__ == "__main__":
    main()
