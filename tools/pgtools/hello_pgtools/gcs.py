"""Google Cloud Storage through google-cloud-storage, with one error type for the tools.

Credentials are google.auth.default()'s: on GKE the metadata server, where Workload Identity
hands out the token of the Google service account bound to the pod's Kubernetes service
account; on a workstation the Application Default Credentials of ``gcloud auth
application-default login``. With ``STORAGE_EMULATOR_HOST`` set (``http://127.0.0.1:9023``)
the client talks to that emulator without credentials (the tests, the kind rehearsal).

Retries, checksums and resumable uploads are the library's: every call is retried on
connection errors, 408, 429 and 5xx until ``retry``'s deadline; uploads declare their MD5 up
front (GCS refuses an object whose bytes do not match it) and compare the MD5 GCS reports
with the bytes sent (deleting the object on a mismatch); downloads compare the received
bytes with the MD5 GCS reports.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import requests
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry
from google.auth import exceptions as auth_exceptions
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption
from google.cloud.storage.retry import DEFAULT_RETRY

# Each request of a resumable upload carries this much; a retry sends one chunk again, not the
# whole dump. A multiple of 256 KiB, as the resumable upload protocol requires.
UPLOAD_CHUNK_BYTES = 16 * 1024 * 1024
_READ_BLOCK = 1024 * 1024
_MESSAGE_LIMIT = 400


class GcsError(Exception):
    """A GCS call failed; ``status`` is the HTTP status, or None when nothing answered."""

    def __init__(self, status: int | None, message: str):
        self.status = status
        self.message = message
        super().__init__(f"HTTP {status}: {message}" if status else message)


class ChecksumMismatch(GcsError):
    """The bytes stored or received are not the bytes GCS's MD5 describes."""


def md5_base64(path: Path) -> str:
    """The base64 MD5 of a file, in the form GCS reports as ``md5Hash``."""
    with path.open("rb") as handle:
        return _md5_base64(handle)


def _md5_base64(handle: BinaryIO) -> str:
    """The base64 MD5 of what is left to read of ``handle``, which is then rewound there."""
    start = handle.tell()
    digest = hashlib.md5()
    for block in iter(lambda: handle.read(_READ_BLOCK), b""):
        digest.update(block)
    handle.seek(start)
    return base64.b64encode(digest.digest()).decode("ascii")


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def _corruption_message(error: DataCorruption) -> str:
    """The library's own words (its last argument), without their reStructuredText quotes."""
    return _one_line(str(error.args[-1] if error.args else error).replace("``", ""))


def _api_message(error: api_exceptions.GoogleAPICallError) -> str:
    """GCS's own message from the error body, else the library's."""
    try:
        return str(error.response.json()["error"]["message"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return error.message or str(error)


class Gcs:
    """The Cloud Storage calls the tools make, each one the library's, its failures GcsError.

    The client is made on first use, so that missing credentials fail the first step that
    touches GCS, named like every other failure. ``retry`` bounds how long a call keeps trying.
    """

    def __init__(
        self,
        client: Callable[[], storage.Client] = lambda: storage.Client(project=None),
        retry: Retry = DEFAULT_RETRY,
        timeout: float = 120.0,
    ):
        self._make_client = client
        self._client: storage.Client | None = None
        self.retry = retry
        self.timeout = timeout

    @contextmanager
    def _reported(self) -> Iterator[None]:
        try:
            yield
        except api_exceptions.RetryError as error:
            # The retry deadline passed: report the last failure, and that it was retried.
            raise self._failure(error.cause, f"still failing after {self.retry.timeout:g} s of retries") from error
        except Exception as error:
            failure = self._failure(error)
            if failure is None:
                raise
            raise failure from error

    def _failure(self, error: BaseException | None, retried: str = "") -> GcsError | None:
        """The GcsError that says what ``error`` means, or None for an error of no GCS call."""
        suffix = f" ({retried})" if retried else ""
        if isinstance(error, api_exceptions.GoogleAPICallError):
            return GcsError(error.code, _one_line(_api_message(error) + suffix))
        # What to do first: google-auth's own words can be long, and the line is cut at its end.
        if isinstance(error, auth_exceptions.DefaultCredentialsError):
            return GcsError(
                None,
                _one_line(
                    "no Google credentials: on GKE, Workload Identity must bind the pod's Kubernetes service "
                    f"account to a Google service account (google.auth.default(): {error})"
                ),
            )
        if isinstance(error, auth_exceptions.GoogleAuthError):
            return GcsError(
                None,
                _one_line(
                    "no access token: on GKE, the metadata server hands it out once Workload Identity binds "
                    f"the pod's Kubernetes service account to a Google service account ({error})"
                ),
            )
        if isinstance(error, (requests.RequestException, ConnectionError)) or retried:
            endpoint = self._client.api_endpoint if self._client else "GCS"
            return GcsError(None, _one_line(f"no answer from {endpoint} ({error}){suffix}"))
        return None

    @property
    def client(self) -> storage.Client:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _blob(self, bucket: str, name: str, generation: int | None = None) -> storage.Blob:
        return self.client.bucket(bucket).blob(name, generation=generation)

    def get_bucket(self, bucket: str) -> storage.Bucket:
        """The bucket's metadata (storage.buckets.get): proves it exists and is reachable."""
        with self._reported():
            return self.client.get_bucket(bucket, retry=self.retry, timeout=self.timeout)

    def get_object(self, bucket: str, name: str) -> storage.Blob:
        with self._reported():
            blob = self._blob(bucket, name)
            blob.reload(retry=self.retry, timeout=self.timeout)
            return blob

    def list_objects(self, bucket: str, prefix: str) -> list[storage.Blob]:
        """Every live object whose name starts with ``prefix``."""
        with self._reported():
            return list(self.client.list_blobs(bucket, prefix=prefix, retry=self.retry, timeout=self.timeout))

    def delete_object(self, bucket: str, name: str, generation: int | None = None) -> None:
        """Delete the live object; with ``generation``, only while it is that generation (which
        also makes the call safe to retry)."""
        with self._reported():
            self._blob(bucket, name).delete(if_generation_match=generation, retry=self.retry, timeout=self.timeout)

    def upload(
        self,
        bucket: str,
        name: str,
        source: Path | bytes,
        content_type: str,
        metadata: dict[str, str],
        if_generation_match: int | None = 0,
    ) -> storage.Blob:
        """Upload a file or bytes as one object, a resumable upload; return what GCS stored.

        ``if_generation_match=0`` (the default) refuses to overwrite an existing object.
        Raises ChecksumMismatch when GCS reports another MD5 than the bytes sent (the library
        has deleted the object then).
        """
        try:
            with io.BytesIO(source) if isinstance(source, bytes) else source.open("rb") as handle, self._reported():
                blob = self._blob(bucket, name)
                blob.metadata, blob.content_type, blob.chunk_size = metadata, content_type, UPLOAD_CHUNK_BYTES
                # Declared when the upload starts: GCS checks it against the bytes it receives.
                blob.md5_hash = _md5_base64(handle)
                # No size: the library then makes a resumable upload whatever the size (a known
                # size of at most 8 MiB would make it one multipart request).
                blob.upload_from_file(
                    handle,
                    content_type=content_type,
                    if_generation_match=if_generation_match,
                    checksum="md5",
                    retry=self.retry,
                    timeout=self.timeout,
                )
        except DataCorruption as error:
            raise ChecksumMismatch(None, _corruption_message(error)) from error
        return blob

    def download(self, blob: storage.Blob, destination: Path) -> None:
        """Stream an object (the generation ``blob`` names, if any) into ``destination``.

        Raises ChecksumMismatch when the bytes received do not have the MD5 GCS reports (the
        library has removed ``destination`` then).
        """
        try:
            with self._reported():
                # A fresh Blob: the library then downloads from the client's endpoint, not from the
                # listed object's mediaLink, where an emulator wrote the address it was reached at.
                fresh = self._blob(blob.bucket.name, blob.name, blob.generation)
                fresh.download_to_filename(str(destination), checksum="md5", retry=self.retry, timeout=self.timeout)
        except DataCorruption as error:
            raise ChecksumMismatch(None, _corruption_message(error)) from error
