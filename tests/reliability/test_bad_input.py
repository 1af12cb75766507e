"""Bad input at scale: generated requests from the published OpenAPI document, and a list of
hostile ones. Never a 5xx; every answer as documented; nothing bad is stored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

SCHEMATHESIS_CASES = 60
SCHEMATHESIS_SEED = 20261128
SCHEMATHESIS_CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    ]
)


def test_generated_requests_get_documented_answers_and_never_a_5xx(
    postgres_database, hello_service, tmp_path, measurement
):
    service = hello_service(postgres_database.dsn)
    report = tmp_path / "schemathesis.ndjson"
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            service.url("/openapi.json"),
            "--checks",
            SCHEMATHESIS_CHECKS,
            "--max-examples",
            str(SCHEMATHESIS_CASES),
            "--seed",
            str(SCHEMATHESIS_SEED),
            "--generation-deterministic",
            "--workers",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
            "--request-timeout",
            "10",
            "--report",
            "ndjson",
            "--report-ndjson-path",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, f"schemathesis found problems:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
    statuses = [
        step["response"]["status_code"]
        for line in report.read_text().splitlines()
        for step in _responses(json.loads(line))
    ]
    assert len(statuses) >= SCHEMATHESIS_CASES, f"schemathesis sent only {len(statuses)} requests"
    assert max(statuses) < 500
    measurement(
        f"schemathesis: {len(statuses)} generated requests (seed {SCHEMATHESIS_SEED}), no 5xx, all as documented"
    )


def _responses(event):
    """Every recorded response in an NDJSON event of schemathesis's report, wherever nested."""
    if isinstance(event, dict):
        if isinstance(event.get("response"), dict) and "status_code" in event["response"]:
            yield event
        for value in event.values():
            yield from _responses(value)
    elif isinstance(event, list):
        for value in event:
            yield from _responses(value)


DEEP = 5000
HOSTILE_PUTS = [
    # (id, path after /hello/, raw body, expected status)
    ("huge body", "Ann", b'{"dateOfBirth":"' + b"9" * (8 << 20) + b'"}', 413),
    ("deep JSON", "Ann", b"[" * DEEP + b"]" * DEEP, 400),
    ("deep JSON object", "Ann", b'{"a":' * (DEEP // 2) + b"1" + b"}" * (DEEP // 2), 400),
    ("NUL byte in the date", "Ann", b'{"dateOfBirth":"1990-05-17\\u0000"}', 400),
    ("raw NUL byte in the body", "Ann", b'{"dateOfBirth":"1990-05-17"}\x00', 400),
    ("NUL byte in the username", "Ann%00", b'{"dateOfBirth":"1990-05-17"}', 400),
    ("percent-encoded newline in the username", "Ann%0A", b'{"dateOfBirth":"1990-05-17"}', 400),
    ("percent-encoded CRLF and a header", "Ann%0D%0AX-Injected:%20yes", b'{"dateOfBirth":"1990-05-17"}', 400),
    ("Cyrillic A look-alike", "%D0%90nn", b'{"dateOfBirth":"1990-05-17"}', 400),
    ("fullwidth a look-alike", "%EF%BD%81nn", b'{"dateOfBirth":"1990-05-17"}', 400),
    ("combining accent", "Anne%CC%81", b'{"dateOfBirth":"1990-05-17"}', 400),
    ("overlong username", "a" * 65, b'{"dateOfBirth":"1990-05-17"}', 400),
    ("percent-encoded slash", "Ann%2Fbob", b'{"dateOfBirth":"1990-05-17"}', 400),
    ("30 February", "Ann", b'{"dateOfBirth":"2020-02-30"}', 400),
    ("expanded year", "Ann", b'{"dateOfBirth":"+002020-01-01"}', 400),
    ("leading space", "Ann", b'{"dateOfBirth":" 2020-01-01"}', 400),
    ("trailing space", "Ann", b'{"dateOfBirth":"2020-01-01 "}', 400),
    ("date and time", "Ann", b'{"dateOfBirth":"2020-01-01T00:00:00Z"}', 400),
    ("far future", "Ann", b'{"dateOfBirth":"9999-12-31"}', 400),
    ("date as a number", "Ann", b'{"dateOfBirth":19900517}', 400),
    ("duplicate field", "Ann", b'{"dateOfBirth":"1990-05-17","dateOfBirth":"1991-05-17"}', 400),
    ("unknown field", "Ann", b'{"dateOfBirth":"1990-05-17","admin":true}', 400),
    ("invalid UTF-8", "Ann", b'{"dateOfBirth":"\xff\xfe"}', 400),
    ("lone surrogate", "Ann", b'{"dateOfBirth":"\\ud800"}', 400),
    ("huge number", "Ann", b'{"dateOfBirth":1' + b"0" * 10000 + b"}", 400),
    ("empty body", "Ann", b"", 400),
]


@pytest.mark.parametrize(
    ("path", "body", "expected"), [case[1:] for case in HOSTILE_PUTS], ids=[case[0] for case in HOSTILE_PUTS]
)
def test_hostile_input_is_refused_with_a_clear_error_and_nothing_stored(
    postgres_database,
    hello_service,
    path,
    body,
    expected,
):
    service = hello_service(postgres_database.dsn)
    answer = requests.put(
        service.url(f"/hello/{path}"), data=body, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert answer.status_code == expected, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["error"], "the error says what to fix"
    greeting = requests.get(service.url(f"/hello/{path}"), timeout=30)
    assert greeting.status_code in (400, 404), greeting.text
    assert postgres_database.psql("select count(*) from users") == "0"
