"""Object storage for the archive: local folders and ``gs://`` buckets.

One interface, two backends. Both list recursively in URI order and skip
names that start with ``_`` or ``.``, so temporary files and markers never
reach a reader. ``write_new`` makes an object visible only when it is
complete and never overwrites one: local files are written under a hidden
temporary name, synced, then hard-linked into place; GCS objects are uploaded
whole with the ``ifGenerationMatch=0`` precondition.
"""

from __future__ import annotations

import abc
import dataclasses
import errno
import io
import os
import re
import time
import uuid
from pathlib import Path
from typing import BinaryIO, Iterator


from recorder._logging import get_logger

log = get_logger(__name__)

GCS_SCHEME = "gs://"
FILE_SCHEME = "file://"
# Bucket names: 3-63 characters of lower-case letters, digits, '-', '_' and
# '.', starting and ending with a letter or digit (names with dots may be
# longer, up to 222, which this pattern also allows).
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
# Emulator project when STORAGE_EMULATOR_HOST is set and no project is named.
EMULATOR_PROJECT = "replay-local"
# Objects are read in chunks this large; an archive file's block is at most
# a few MiB, so one request usually covers a whole file.
GCS_READ_CHUNK_BYTES = 8 * 1024 * 1024
_RETRY_LOG_INTERVAL_SECS = 10.0


class StorageError(Exception):
    """Storage failed; the message names the URI and the fix."""


class ObjectExistsError(StorageError):
    """``write_new`` found an object already at the URI; nothing was overwritten."""


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its full URI and its size in bytes."""

    uri: str
    size: int


def is_hidden(name: str) -> bool:
    """Return true for names readers must skip (temporary files, markers)."""
    return name.startswith(("_", "."))


def join_uri(base: str, *parts: str) -> str:
    """Join path parts onto a local path, ``file://`` or ``gs://`` URI with '/'."""
    uri = base
    for part in parts:
        part = part.strip("/")
        if not part:
            continue
        uri = uri if uri.endswith("/") else uri + "/"
        uri += part
    return uri


class Storage(abc.ABC):
    """Backend that stores archive files. Implementations are safe to share between threads."""

    @abc.abstractmethod
    def list(self, prefix_uri: str) -> Iterator[ObjectInfo]:
        """Yield every object below ``prefix_uri`` (recursively), sorted by URI.

        Names with a path component starting with ``_`` or ``.`` are skipped.
        """

    @abc.abstractmethod
    def list_dirs(self, prefix_uri: str) -> list[str]:
        """Return the names of the folders directly below ``prefix_uri``, sorted."""

    @abc.abstractmethod
    def open_read(self, uri: str) -> BinaryIO:
        """Open an object for streaming reads."""

    @abc.abstractmethod
    def read_bytes(self, uri: str) -> bytes:
        """Return an object's whole content."""

    @abc.abstractmethod
    def write_new(self, uri: str, data: bytes) -> None:
        """Store ``data`` at ``uri`` atomically; raise ObjectExistsError if it exists."""

    @abc.abstractmethod
    def exists(self, uri: str) -> bool:
        """Return true when an object (or, locally, a folder) exists at ``uri``."""


def open_storage(uri: str) -> Storage:
    """Return the backend for ``uri``: ``gs://bucket/prefix`` or a local path / ``file://``."""
    if not isinstance(uri, str) or not uri.strip():
        raise StorageError(
            f"archive URI {uri!r} is empty; pass a local folder or gs://bucket/prefix"
        )
    if uri.startswith(GCS_SCHEME):
        parse_gcs_uri(uri)
        return GcsStorage()
    if "://" in uri and not uri.startswith(FILE_SCHEME):
        scheme = uri.split("://", 1)[0]
        raise StorageError(
            f"archive URI {uri!r} has unsupported scheme {scheme!r}; "
            "use gs://bucket/prefix or a local folder path"
        )
    return LocalStorage()


# --------------------------------------------------------------------------- local


def local_path(uri: str) -> Path:
    """Return the filesystem path of a local path or ``file://`` URI."""
    if uri.startswith(FILE_SCHEME):
        uri = uri[len(FILE_SCHEME):]
    return Path(uri)


class LocalStorage(Storage):
    """Archive files in a local folder (or a mounted file system)."""

    def list(self, prefix_uri: str) -> Iterator[ObjectInfo]:
        root = local_path(prefix_uri)
        if root.is_file():
            yield ObjectInfo(prefix_uri, root.stat().st_size)
            return
        found: list[ObjectInfo] = []
        for folder, dirs, files in os.walk(root):
            dirs[:] = [name for name in dirs if not is_hidden(name)]
            for name in files:
                if is_hidden(name):
                    continue
                path = Path(folder) / name
                relative = path.relative_to(root).as_posix()
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue  # removed while listing
                found.append(ObjectInfo(join_uri(prefix_uri, relative), size))
        yield from sorted(found, key=lambda info: info.uri)

    def list_dirs(self, prefix_uri: str) -> list[str]:
        root = local_path(prefix_uri)
        if not root.is_dir():
            raise StorageError(
                f"archive folder {prefix_uri!r} does not exist or is not a folder; "
                "check the path, or record into it first"
            )
        return sorted(
            entry.name for entry in os.scandir(root)
            if entry.is_dir() and not is_hidden(entry.name)
        )

    def open_read(self, uri: str) -> BinaryIO:
        try:
            return open(local_path(uri), "rb")
        except FileNotFoundError as error:
            raise StorageError(f"archive file {uri!r} not found; it may have been moved or deleted") from error
        except PermissionError as error:
            raise StorageError(f"permission denied reading {uri!r}; make the file readable") from error

    def read_bytes(self, uri: str) -> bytes:
        with self.open_read(uri) as source:
            return source.read()

    def exists(self, uri: str) -> bool:
        return local_path(uri).exists()

    def write_new(self, uri: str, data: bytes) -> None:
        path = local_path(uri)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(
                f"cannot create folder {str(path.parent)!r} for {uri!r}: {error}; "
                "check the archive path and its permissions"
            ) from error
        # The hidden name keeps readers away from the partial file.
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(temporary, "xb") as target:
                target.write(data)
                target.flush()
                os.fsync(target.fileno())
            self._publish(temporary, path, uri)
            _fsync_folder(path.parent)
        except OSError as error:
            raise StorageError(f"writing {uri!r} failed: {error}; check free space and permissions") from error
        finally:
            try:
                os.unlink(temporary)
            except FileNotFoundError:
                pass

    @staticmethod
    def _publish(temporary: Path, path: Path, uri: str) -> None:
        # A hard link is an atomic "create if absent": the complete file
        # appears at its final name, or FileExistsError and nothing changes.
        try:
            os.link(temporary, path)
        except FileExistsError as error:
            raise ObjectExistsError(
                f"archive file {uri!r} already exists; files are never overwritten, "
                "so write under a new name (a new sequence number or writer id)"
            ) from error
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            # NOTE: file systems without hard links fall back to check-then-rename,
            # which another writer could race between the check and the rename.
            if path.exists():
                raise ObjectExistsError(
                    f"archive file {uri!r} already exists; files are never overwritten"
                ) from error
            os.replace(temporary, path)


def _fsync_folder(folder: Path) -> None:
    # The rename is durable only once the folder entry is on disk.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


# --------------------------------------------------------------------------- GCS


def parse_gcs_uri(uri: str) -> tuple[str, str]:
    """Split ``gs://bucket/name`` into bucket and object name (may be empty)."""
    if not uri.startswith(GCS_SCHEME):
        raise StorageError(f"{uri!r} is not a gs:// URI; expected gs://bucket/prefix")
    bucket, _, name = uri[len(GCS_SCHEME):].partition("/")
    if not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
        raise StorageError(
            f"GCS URI {uri!r} has an invalid bucket name {bucket!r}; bucket names are "
            "3-63 lower-case letters, digits, '-', '_' or '.', e.g. gs://my-archive/pipeline"
        )
    return bucket, name


_TRANSIENT_STATUS_CODES = frozenset({408, 429, 500, 502, 503, 504})


def _is_transient(error: BaseException) -> bool:
    """Return true for errors worth retrying: 408, 429, 5xx and broken connections."""
    from google.api_core import exceptions as api_exceptions

    if isinstance(error, (api_exceptions.TooManyRequests, api_exceptions.InternalServerError,
                          api_exceptions.BadGateway, api_exceptions.ServiceUnavailable,
                          api_exceptions.GatewayTimeout)):
        return True
    if isinstance(error, api_exceptions.GoogleAPICallError) and error.code == 408:
        return True
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    # Uploads and downloads go through google-cloud-storage's media layer,
    # which raises InvalidResponse (not an api_core error) for an HTTP error.
    status = getattr(getattr(error, "response", None), "status_code", None)
    if type(error).__name__ == "InvalidResponse" and status in _TRANSIENT_STATUS_CODES:
        return True
    try:
        import requests
    except ImportError:  # pragma: no cover - google-cloud-storage depends on requests
        return False
    return isinstance(error, (requests.ConnectionError, requests.Timeout,
                              requests.exceptions.ChunkedEncodingError))


class GcsStorage(Storage):
    """Archive objects in Google Cloud Storage.

    With ``STORAGE_EMULATOR_HOST`` set, the client uses anonymous credentials
    and the project from ``GOOGLE_CLOUD_PROJECT`` (default ``replay-local``),
    so tests never look up real credentials. Transient errors are retried
    with exponential backoff (0.5 s doubling to 16 s) for up to
    ``retry_timeout_secs``.
    """

    def __init__(self, *, retry_timeout_secs: float = 120.0, client=None) -> None:
        from google.api_core.retry import Retry

        self._client = client
        self.retry_timeout_secs = retry_timeout_secs
        self._last_retry_log: float | None = None
        self._retry = Retry(predicate=_is_transient, initial=0.5, maximum=16.0,
                            multiplier=2.0, timeout=retry_timeout_secs, on_error=self._log_retry)

    def _log_retry(self, error: BaseException) -> None:
        # A retry loop can last minutes, so log it, at most every 10 s.
        now = time.monotonic()
        if self._last_retry_log is not None and now - self._last_retry_log < _RETRY_LOG_INTERVAL_SECS:
            return
        self._last_retry_log = now
        log.warning("storage.retrying", endpoint=gcs_endpoint(), retry_timeout_s=self.retry_timeout_secs,
                    error=f"{type(error).__name__}: {str(error)[:200]}")

    @property
    def client(self):
        """The google-cloud-storage client, created on first use."""
        if self._client is None:
            self._client = _make_client()
        return self._client

    def _blob(self, uri: str):
        bucket, name = parse_gcs_uri(uri)
        if not name:
            raise StorageError(f"GCS URI {uri!r} names a bucket but no object; add the object path")
        return self.client.bucket(bucket).blob(name)

    def list(self, prefix_uri: str) -> Iterator[ObjectInfo]:
        bucket, prefix = parse_gcs_uri(prefix_uri)
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        try:
            blobs = list(self.client.list_blobs(bucket, prefix=prefix, retry=self._retry))
        except Exception as error:
            raise _translate(error, prefix_uri, "list", self.client) from error
        found = []
        for blob in blobs:
            relative = blob.name[len(prefix):]
            if not relative or relative.endswith("/"):
                continue  # folder placeholder objects
            if any(is_hidden(part) for part in relative.split("/")):
                continue
            found.append(ObjectInfo(f"{GCS_SCHEME}{bucket}/{blob.name}", int(blob.size or 0)))
        yield from sorted(found, key=lambda info: info.uri)

    def list_dirs(self, prefix_uri: str) -> list[str]:
        bucket, prefix = parse_gcs_uri(prefix_uri)
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        try:
            iterator = self.client.list_blobs(bucket, prefix=prefix, delimiter="/", retry=self._retry)
            for _ in iterator:  # the prefixes are known once the pages are consumed
                pass
            prefixes = iterator.prefixes
        except Exception as error:
            raise _translate(error, prefix_uri, "list", self.client) from error
        names = {entry[len(prefix):].rstrip("/") for entry in prefixes}
        return sorted(name for name in names if name and not is_hidden(name))

    def open_read(self, uri: str) -> BinaryIO:
        blob = self._blob(uri)
        try:
            blob.reload(retry=self._retry)
        except Exception as error:
            raise _translate(error, uri, "read", self.client) from error
        return blob.open("rb", chunk_size=GCS_READ_CHUNK_BYTES, retry=self._retry)

    def read_bytes(self, uri: str) -> bytes:
        blob = self._blob(uri)
        try:
            return blob.download_as_bytes(retry=self._retry)
        except Exception as error:
            raise _translate(error, uri, "read", self.client) from error

    def exists(self, uri: str) -> bool:
        bucket, name = parse_gcs_uri(uri)
        try:
            if not name:
                return self.client.bucket(bucket).exists(retry=self._retry)
            return self.client.bucket(bucket).blob(name).exists(retry=self._retry)
        except Exception as error:
            raise _translate(error, uri, "check", self.client) from error

    def write_new(self, uri: str, data: bytes) -> None:
        from google.api_core import exceptions as api_exceptions

        blob = self._blob(uri)
        # NOTE: gcp-storage-emulator (2026.7) ignores ifGenerationMatch, so this
        # check is what refuses an overwrite there; on GCS the precondition
        # below also closes the race between the check and the upload.
        if self.exists(uri):
            raise ObjectExistsError(
                f"archive object {uri!r} already exists; objects are never overwritten, "
                "so write under a new name (a new sequence number or writer id)"
            )
        try:
            # ifGenerationMatch=0: the upload succeeds only if no live object
            # has this name, which also makes the retried upload safe.
            blob.upload_from_file(io.BytesIO(data), size=len(data), if_generation_match=0,
                                  content_type="application/avro", retry=self._retry)
        except api_exceptions.PreconditionFailed as error:
            if self._same_content(blob, data):
                # An earlier attempt succeeded but its response was lost.
                return
            raise ObjectExistsError(
                f"archive object {uri!r} already exists; objects are never overwritten, "
                "so write under a new name (a new sequence number or writer id)"
            ) from error
        except Exception as error:
            raise _translate(error, uri, "write", self.client) from error
        log.debug("storage.object_written", file=uri, size_bytes=len(data))

    def _same_content(self, blob, data: bytes) -> bool:
        try:
            return blob.download_as_bytes(retry=self._retry) == data
        except Exception:  # the object is unreadable: report the conflict
            return False


def _make_client():
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        project = os.environ.get("GOOGLE_CLOUD_PROJECT") or EMULATOR_PROJECT
        return storage.Client(project=project, credentials=AnonymousCredentials())
    try:
        return storage.Client()
    except Exception as error:  # google.auth raises several types here
        raise StorageError(
            f"cannot create a Google Cloud Storage client: {error}; run "
            "'gcloud auth application-default login' or set GOOGLE_APPLICATION_CREDENTIALS"
        ) from error


def gcs_endpoint() -> str:
    """Return the Cloud Storage endpoint the client uses, for messages."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        return f"{emulator} (STORAGE_EMULATOR_HOST)"
    return "https://storage.googleapis.com"


def _translate(error: BaseException, uri: str, action: str, client=None) -> StorageError:
    """Turn a google-cloud-storage error into a StorageError naming the URI and the fix."""
    from google.api_core import exceptions as api_exceptions

    if isinstance(error, StorageError):
        return error
    if isinstance(error, api_exceptions.RetryError):
        # The retry budget ran out on transient errors, usually a refused connection.
        cause = error.cause
        detail = f"{type(cause).__name__}" if cause is not None else "timed out"
        return StorageError(
            f"GCS {action} of {uri!r} failed: {gcs_endpoint()} could not be reached ({detail}) "
            "before the retry time ran out; check the host and network, or STORAGE_EMULATOR_HOST "
            "when using an emulator"
        )
    bucket, name = parse_gcs_uri(uri)
    if isinstance(error, api_exceptions.NotFound):
        if _bucket_missing(client, bucket, action):
            return StorageError(
                f"GCS bucket {bucket!r} not found ({uri!r}); create it "
                f"(gcloud storage buckets create gs://{bucket}) or fix the archive URI"
            )
        return StorageError(f"GCS object {uri!r} not found; it may have been deleted or the URI is wrong")
    if isinstance(error, (api_exceptions.Forbidden, api_exceptions.Unauthorized)):
        role = "roles/storage.objectCreator" if action == "write" else "roles/storage.objectViewer"
        return StorageError(
            f"permission denied to {action} {uri!r}: {error.message if hasattr(error, 'message') else error}; "
            f"grant the account {role} on bucket {bucket!r}"
        )
    if _is_transient(error):
        return StorageError(
            f"GCS {action} of {uri!r} still failed after retries: {error}; "
            "check the network and GCS status, then run again"
        )
    return StorageError(f"GCS {action} of {uri!r} failed: {type(error).__name__}: {error}")


def _bucket_missing(client, bucket: str, action: str) -> bool:
    # Listing an absent prefix returns nothing, so a 404 there (or on upload)
    # means the bucket is gone; for a read, ask whether the bucket exists.
    if action in ("list", "write") or client is None:
        return action in ("list", "write")
    try:
        return not client.bucket(bucket).exists()
    except Exception:
        return False
