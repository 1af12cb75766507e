"""A small Google Cloud Storage client over the JSON API, standard library only.

Authentication, in this order:
- ``STORAGE_EMULATOR_HOST`` set (``http://127.0.0.1:9023`` or ``127.0.0.1:9023``): talk to
  that emulator, without credentials (tests).
- ``GOOGLE_OAUTH_ACCESS_TOKEN`` set: use that bearer token (a run by hand:
  ``GOOGLE_OAUTH_ACCESS_TOKEN=$(gcloud auth print-access-token)``).
- Otherwise: the GKE metadata server (Workload Identity), at ``GCE_METADATA_HOST`` when set,
  else ``metadata.google.internal``.

Uploads are resumable uploads sent in one request: GCS creates the object only when every
byte has arrived and the MD5 declared up front matches, so an interrupted upload never
leaves an object behind.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

GCS_ENDPOINT = "https://storage.googleapis.com"
_CHUNK = 1024 * 1024


class GcsError(Exception):
    """A GCS request failed; ``status`` is the HTTP status, or None when nothing answered."""

    def __init__(self, status: int | None, message: str):
        self.status = status
        self.message = message
        super().__init__(f"HTTP {status}: {message}" if status else message)


def md5_base64(path: Path) -> str:
    """The base64 MD5 of a file, in the form GCS reports as ``md5Hash``."""
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode("ascii")


class _MetadataServerToken:
    """Access tokens of the pod's Google service account, cached until shortly before expiry.

    GKE's metadata server can refuse or fail for the first seconds of a pod (Workload Identity
    is being set up for it), so a failed fetch is tried again, with a growing pause, for up to
    ``retry_seconds`` before the job gives up."""

    def __init__(self, timeout: float, retry_seconds: float = 30.0):
        host = os.environ.get("GCE_METADATA_HOST", "metadata.google.internal")
        self._url = f"http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
        self._timeout = timeout
        self._retry_seconds = retry_seconds
        self._token = ""
        self._expires = 0.0

    def _fetch(self) -> dict:
        request = urllib.request.Request(self._url, headers={"Metadata-Flavor": "Google"})
        with urllib.request.urlopen(request, timeout=self._timeout) as response:
            body = json.load(response)
        if not isinstance(body, dict) or not body.get("access_token"):
            raise ValueError("the answer holds no access_token")
        return body

    def __call__(self) -> str:
        if time.monotonic() < self._expires:
            return self._token
        deadline = time.monotonic() + self._retry_seconds
        pause = 0.5
        attempts = 0
        while True:
            attempts += 1
            try:
                body = self._fetch()
                break
            except (urllib.error.URLError, OSError, ValueError) as error:
                if time.monotonic() + pause > deadline:
                    raise GcsError(
                        None,
                        f"no access token from the metadata server {self._url} after {attempts} "
                        f"attempts in {self._retry_seconds:g} s ({error}); Workload Identity must bind "
                        "the pod's Kubernetes service account to a Google service account, or set "
                        "GOOGLE_OAUTH_ACCESS_TOKEN",
                    ) from error
                time.sleep(pause)
                pause = min(pause * 2, 8.0)
        self._token = body["access_token"]
        self._expires = time.monotonic() + int(body.get("expires_in", 300)) - 60
        return self._token


@dataclass
class Gcs:
    """A GCS JSON API endpoint and a way to get an access token (None: anonymous)."""

    endpoint: str
    token: object | None
    timeout: float = 120.0

    @classmethod
    def from_environment(cls, timeout: float = 120.0) -> Gcs:
        emulator = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
        if emulator:
            if "://" not in emulator:
                emulator = "http://" + emulator
            return cls(emulator.rstrip("/"), None, timeout)
        static = os.environ.get("GOOGLE_OAUTH_ACCESS_TOKEN", "").strip()
        if static:
            return cls(GCS_ENDPOINT, lambda: static, timeout)
        return cls(GCS_ENDPOINT, _MetadataServerToken(timeout), timeout)

    # -- plumbing --------------------------------------------------------------------------

    def _url(self, path: str, **query: str) -> str:
        url = self.endpoint + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        return url

    def _request(
        self,
        method: str,
        url: str,
        body: bytes | BinaryIO | None = None,
        headers: dict[str, str] | None = None,
    ) -> urllib.request.addinfourl:
        headers = dict(headers or {})
        if self.token is not None:
            headers["Authorization"] = "Bearer " + self.token()
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            raise GcsError(error.code, _error_message(error)) from error
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise GcsError(None, f"no answer from {self.endpoint} ({reason})") from error

    def _json(self, method: str, url: str, document: dict | None = None) -> dict:
        body = None
        headers = {}
        if document is not None:
            body = json.dumps(document).encode()
            headers["Content-Type"] = "application/json; charset=UTF-8"
        with self._request(method, url, body, headers) as response:
            raw = response.read()
        try:
            return json.loads(raw) if raw else {}
        except ValueError as error:
            raise GcsError(None, f"{method} {url} answered with non-JSON: {raw[:200]!r}") from error

    @staticmethod
    def _object_path(bucket: str, name: str) -> str:
        return f"/storage/v1/b/{_quote(bucket)}/o/{_quote(name)}"

    # -- API -------------------------------------------------------------------------------

    def get_bucket(self, bucket: str) -> dict:
        return self._json("GET", self._url(f"/storage/v1/b/{_quote(bucket)}"))

    def get_object(self, bucket: str, name: str) -> dict:
        return self._json("GET", self._url(self._object_path(bucket, name)))

    def list_objects(self, bucket: str, prefix: str) -> list[dict]:
        """Every live object whose name starts with ``prefix``, following page tokens."""
        items: list[dict] = []
        page_token = ""
        while True:
            query = {"prefix": prefix}
            if page_token:
                query["pageToken"] = page_token
            page = self._json("GET", self._url(f"/storage/v1/b/{_quote(bucket)}/o", **query))
            items.extend(page.get("items") or [])
            page_token = page.get("nextPageToken") or ""
            if not page_token:
                return items

    def delete_object(self, bucket: str, name: str) -> None:
        with self._request("DELETE", self._url(self._object_path(bucket, name))):
            pass

    def upload(
        self,
        bucket: str,
        name: str,
        source: Path | bytes,
        content_type: str,
        metadata: dict[str, str],
        if_generation_match: int | None = 0,
    ) -> dict:
        """Upload a file or bytes as one object and return the object resource GCS stored.

        GCS checks the MD5 declared here against the bytes it received and refuses the
        object on a mismatch. ``if_generation_match=0`` (the default) refuses to overwrite
        an existing object.
        """
        if isinstance(source, Path):
            size = source.stat().st_size
            md5 = md5_base64(source)
        else:
            size = len(source)
            md5 = base64.b64encode(hashlib.md5(source).digest()).decode("ascii")
        query = {"uploadType": "resumable", "name": name}
        if if_generation_match is not None:
            query["ifGenerationMatch"] = str(if_generation_match)
        start = self._url(f"/upload/storage/v1/b/{_quote(bucket)}/o", **query)
        resource = {"name": name, "contentType": content_type, "md5Hash": md5, "metadata": metadata}
        headers = {
            "Content-Type": "application/json; charset=UTF-8",
            "X-Upload-Content-Type": content_type,
            "X-Upload-Content-Length": str(size),
        }
        with self._request("POST", start, json.dumps(resource).encode(), headers) as response:
            session = response.headers.get("Location")
        if not session:
            raise GcsError(None, "the resumable upload started without a session URL")
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(size),
            "Content-Range": f"bytes 0-{size - 1}/{size}" if size else "bytes */0",
        }
        if isinstance(source, Path):
            with source.open("rb") as handle, self._request("PUT", session, handle, headers) as response:
                stored = json.loads(response.read())
        else:
            with self._request("PUT", session, source, headers) as response:
                stored = json.loads(response.read())
        return stored

    def download(self, bucket: str, name: str, destination: Path, generation: str | None = None) -> str:
        """Stream an object into ``destination``; return the base64 MD5 of the bytes received."""
        query = {"alt": "media"}
        if generation:
            query["generation"] = generation
        digest = hashlib.md5()
        url = self._url(self._object_path(bucket, name), **query)
        with self._request("GET", url) as response, destination.open("wb") as handle:
            for block in iter(lambda: response.read(_CHUNK), b""):
                digest.update(block)
                handle.write(block)
        return base64.b64encode(digest.digest()).decode("ascii")


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        raw = error.read()
    except OSError:
        raw = b""
    try:
        document = json.loads(raw)
        message = document.get("error", {}).get("message")
        if message:
            return str(message)
    except (ValueError, AttributeError):
        pass
    text = raw.decode("utf-8", "replace").strip()
    return text[:300] or error.reason or "no details"
