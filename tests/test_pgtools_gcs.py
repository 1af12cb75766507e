"""hello_pgtools' Cloud Storage access (hello_pgtools.gcs over google-cloud-storage 3.17.1 and
google-auth 2.63.0): what it sends, what it survives, and where its credentials come from.

The package is imported directly and talks to the GCS emulator (STORAGE_EMULATOR_HOST, no
credentials), through proxies that record or damage the traffic. The Workload Identity path runs
the installed pg-dump-to-gcs as a pod runs it: no emulator, google.auth.default() finding a
stand-in of GKE's metadata server (support.metadata), and Cloud Storage's API reached at the
emulator through API_ENDPOINT_OVERRIDE (google-cloud-storage's own setting for another endpoint,
google/cloud/storage/_helpers.py), where the token must arrive as a bearer token.
"""

from __future__ import annotations

import json
import os

import pytest
from google.cloud.storage.retry import DEFAULT_RETRY

from hello_pgtools.gcs import UPLOAD_CHUNK_BYTES, ChecksumMismatch, Gcs, GcsError
from support import run_tool
from support.metadata import TOKEN, MetadataServer, workload_identity_env
from support.net import free_port

# Long enough for a few of the library's retries (its backoff starts at 1 s), short for a test.
SHORT_RETRY = DEFAULT_RETRY.with_timeout(4)


@pytest.fixture
def emulated(monkeypatch, gcs_emulator):
    """Point google-cloud-storage at the emulator, or at a proxy in front of it (``port``)."""

    def use(port: int | None = None) -> None:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.env(port)["STORAGE_EMULATOR_HOST"])

    use()
    return use


@pytest.fixture
def dump_file(tmp_path):
    """A file of random bytes, larger than one read of the proxies."""
    path = tmp_path / "database.dump"
    path.write_bytes(os.urandom(300_000))
    return path


def requests_seen(chunks: list[bytes]) -> list[str]:
    """The request lines and JSON bodies a client sent on its connections."""
    return [chunk.decode("latin-1") for chunk in chunks]


def test_a_file_goes_up_as_one_resumable_upload_that_declares_its_md5(
    emulated, gcs_emulator, gcs_bucket, silencing_proxy, dump_file
):
    """GCS creates a resumable upload's object only when its last byte has arrived, and refuses
    it when the MD5 declared in the session's metadata does not match (JSON API, objects.insert
    with uploadType=resumable): an interrupted or altered upload leaves nothing behind."""
    sent: list[bytes] = []
    proxy = silencing_proxy(gcs_emulator.port, inspect=lambda: sent.append)
    emulated(proxy.port)
    stored = Gcs().upload(gcs_bucket, "logical/a.dump", dump_file, "application/octet-stream", {"k": "v"})
    text = "".join(requests_seen(sent))
    assert f"POST /upload/storage/v1/b/{gcs_bucket}/o?uploadType=resumable" in text
    assert '"md5Hash": "' in text, "the MD5 is not declared when the session starts"
    assert "multipart" not in text
    assert UPLOAD_CHUNK_BYTES % (256 * 1024) == 0, "resumable chunks are multiples of 256 KiB"
    blob = gcs_emulator.client().bucket(gcs_bucket).get_blob("logical/a.dump")
    assert blob.download_as_bytes() == dump_file.read_bytes()
    assert (stored.md5_hash, stored.size, blob.metadata) == (blob.md5_hash, blob.size, {"k": "v"})


# Where the proxy cuts an upload's connection: inside the request's headers, before any byte of
# its body. GCS ignores the bytes of a repeated chunk that it already holds ("Resumable uploads",
# cloud.google.com/storage/docs/resumable-uploads), so the library repeats an interrupted chunk
# whole; gcp-storage-emulator 2026.7.19 instead keeps what arrived of a cut body and then refuses
# the repeat ("Invalid Content-Range start"), so a cut inside the body would test the emulator.
CUT_IN_HEADERS = 100


def test_a_connection_cut_mid_upload_is_resumed(emulated, gcs_emulator, gcs_bucket, tcp_proxy, dump_file):
    proxy = tcp_proxy(gcs_emulator.port, cut_after=CUT_IN_HEADERS, limit=1)
    emulated(proxy.port)
    Gcs().upload(gcs_bucket, "logical/a.dump", dump_file, "application/octet-stream", {})
    assert proxy.faults == 1, "the proxy never cut an upload"
    blob = gcs_emulator.client().bucket(gcs_bucket).get_blob("logical/a.dump")
    assert blob.download_as_bytes() == dump_file.read_bytes()


def test_a_connection_cut_every_time_fails_after_the_retries_and_stores_nothing(
    emulated, gcs_emulator, gcs_bucket, tcp_proxy, dump_file
):
    proxy = tcp_proxy(gcs_emulator.port, cut_after=CUT_IN_HEADERS)
    emulated(proxy.port)
    with pytest.raises(GcsError) as raised:
        Gcs(retry=SHORT_RETRY).upload(gcs_bucket, "logical/a.dump", dump_file, "application/octet-stream", {})
    assert proxy.faults > 1, "the upload was not tried again"
    assert "still failing after 4 s of retries" in str(raised.value)
    assert list(gcs_emulator.client().list_blobs(gcs_bucket)) == []


def test_bytes_that_gcs_stores_with_another_md5_are_deleted(emulated, gcs_emulator, gcs_bucket, tcp_proxy, dump_file):
    proxy = tcp_proxy(gcs_emulator.port, garble_reply_md5=True)
    emulated(proxy.port)
    with pytest.raises(ChecksumMismatch) as raised:
        Gcs().upload(gcs_bucket, "logical/a.dump", dump_file, "application/octet-stream", {})
    assert proxy.faults == 1 and "MD5" in str(raised.value)
    assert list(gcs_emulator.client().list_blobs(gcs_bucket)) == []


def test_a_download_altered_in_transit_is_refused(emulated, gcs_emulator, gcs_bucket, tcp_proxy, dump_file, tmp_path):
    gcs_emulator.client().bucket(gcs_bucket).blob("logical/a.dump").upload_from_filename(dump_file)
    proxy = tcp_proxy(gcs_emulator.port, flip_reply_at=5_000)
    emulated(proxy.port)
    gcs = Gcs()
    (listed,) = gcs.list_objects(gcs_bucket, "logical/")
    with pytest.raises(ChecksumMismatch):
        gcs.download(listed, tmp_path / "copy.dump")
    assert proxy.faults == 1, "the proxy never altered the download"
    assert not (tmp_path / "copy.dump").exists(), "the damaged copy was left behind"


def test_a_missing_object_or_bucket_is_a_404(emulated, gcs_bucket):
    gcs = Gcs()
    for call in (lambda: gcs.get_object(gcs_bucket, "logical/nope.dump"), lambda: gcs.get_bucket("no-such-bucket")):
        with pytest.raises(GcsError) as raised:
            call()
        assert raised.value.status == 404 and str(raised.value).startswith("HTTP 404: ")


def test_storage_that_never_answers_is_tried_until_the_deadline(monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(GcsError) as raised:
        Gcs(retry=SHORT_RETRY).get_bucket("hello-backups")
    message = str(raised.value)
    assert message.startswith("no answer from http://127.0.0.1:") and "after 4 s of retries" in message
    assert "\n" not in message


def authorization(request: str) -> str | None:
    """The Authorization header of an HTTP request's text (header names ignore case)."""
    for line in request.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "authorization":
            return value.strip()
    return None


def test_the_workload_identity_token_reaches_cloud_storage(gcs_emulator, gcs_bucket, silencing_proxy, tmp_path):
    """google.auth.default() finds GKE's metadata server, asks again while it answers 503 (a
    pod's first seconds; google-auth 2.63.0, compute_engine/_metadata.py ``get``: five attempts
    with exponential backoff on 500, 503, 504, 408 and 429), and the token goes to Cloud
    Storage as the bearer token of every call."""
    name = "logical/hello-db/app/20261128T020000Z.dump"
    gcs_emulator.client().bucket(gcs_bucket).blob(name).upload_from_string(b"dump")
    sent: list[bytes] = []
    proxy = silencing_proxy(gcs_emulator.port, inspect=lambda: sent.append)
    metadata = MetadataServer(failures=2)
    try:
        done = run_tool(
            "pg-dump-to-gcs",
            *("list", "--bucket", gcs_bucket, "--cluster", "hello-db", "--json"),
            env=workload_identity_env(tmp_path, metadata, proxy.port),
            timeout=120,
        )
    finally:
        metadata.close()
    assert done.returncode == 0, done.stderr
    assert [item["name"] for item in json.loads(done.stdout)] == [name]
    # Asked again after the two 503s (how often google-auth asks in all is its own business).
    assert metadata.token_requests > 2, "\n".join(path for path, _ in metadata.requests)
    assert all(flavor == "Google" for _, flavor in metadata.requests)
    api_requests = [chunk for chunk in requests_seen(sent) if chunk.startswith(("GET ", "POST ", "PUT "))]
    assert api_requests, "nothing reached Cloud Storage"
    assert {authorization(request) for request in api_requests} == {f"Bearer {TOKEN}"}


def test_without_a_metadata_server_the_step_names_workload_identity(gcs_bucket, tmp_path):
    done = run_tool(
        "pg-dump-to-gcs",
        *("list", "--bucket", gcs_bucket, "--cluster", "hello-db"),
        env=workload_identity_env(tmp_path),
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"pg-dump-to-gcs: list failed: cannot list gs://{gcs_bucket}/logical/hello-db/app/")
    assert "no Google credentials" in done.stderr and "Workload Identity must bind" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, "one line, not a traceback"
