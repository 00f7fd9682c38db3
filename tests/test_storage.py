"""Storage backends: local folders and gs:// on the GCS emulator."""

from __future__ import annotations

import threading

import pytest
from google.api_core import exceptions as api_exceptions

from recorder._storage import (
    GcsStorage,
    LocalStorage,
    ObjectExistsError,
    ObjectInfo,
    StorageError,
    _is_transient,
    join_uri,
    open_storage,
    parse_gcs_uri,
)


# ----------------------------------------------------------------- local


def test_local_write_then_read(tmp_path):
    """A written object reads back byte for byte."""
    storage = LocalStorage()
    uri = join_uri(str(tmp_path), "date=2024-03-09", "phase=p2", "a.avro")
    storage.write_new(uri, b"payload")
    assert storage.read_bytes(uri) == b"payload"
    with storage.open_read(uri) as source:
        assert source.read(3) == b"pay"


def test_local_write_new_refuses_overwrite(tmp_path):
    """write_new raises ObjectExistsError and keeps the first content."""
    storage = LocalStorage()
    uri = str(tmp_path / "a.avro")
    storage.write_new(uri, b"first")
    with pytest.raises(ObjectExistsError, match="already exists"):
        storage.write_new(uri, b"second")
    assert storage.read_bytes(uri) == b"first"


def test_local_write_leaves_no_temporary_files(tmp_path):
    """Only the final file remains after write_new, also after a refused overwrite."""
    storage = LocalStorage()
    uri = str(tmp_path / "a.avro")
    storage.write_new(uri, b"first")
    with pytest.raises(ObjectExistsError):
        storage.write_new(uri, b"second")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.avro"]


def test_local_concurrent_write_new_one_wins(tmp_path):
    """Of many threads writing one name, exactly one succeeds."""
    storage = LocalStorage()
    uri = str(tmp_path / "race.avro")
    outcomes = []

    def attempt(index):
        try:
            storage.write_new(uri, f"writer {index}".encode())
            outcomes.append("ok")
        except ObjectExistsError:
            outcomes.append("exists")

    threads = [threading.Thread(target=attempt, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == 1
    assert outcomes.count("exists") == 7


def test_local_list_recursive_sorted_skips_hidden(tmp_path):
    """list() walks subfolders in URI order and skips _ and . names."""
    storage = LocalStorage()
    root = str(tmp_path)
    for name in ["b/x.avro", "a/y.avro", "a/sub/z.avro", "a/_tmp.avro", "a/.part.tmp",
                 "_staging/w.avro", ".hidden/v.avro"]:
        storage.write_new(join_uri(root, name), b"12345")
    listed = list(storage.list(root))
    assert [info.uri for info in listed] == [
        join_uri(root, "a/sub/z.avro"), join_uri(root, "a/y.avro"), join_uri(root, "b/x.avro")]
    assert all(info.size == 5 for info in listed)


def test_local_list_dirs_missing_folder(tmp_path):
    """list_dirs on a missing folder names it and gives the fix."""
    missing = str(tmp_path / "nope")
    with pytest.raises(StorageError, match="does not exist.*record into it first") as caught:
        LocalStorage().list_dirs(missing)
    assert missing in str(caught.value)


def test_local_file_uri(tmp_path):
    """file:// URIs address the same files as plain paths."""
    storage = open_storage(f"file://{tmp_path}")
    storage.write_new(f"file://{tmp_path}/a.avro", b"x")
    assert (tmp_path / "a.avro").read_bytes() == b"x"
    assert list(storage.list(f"file://{tmp_path}")) == [ObjectInfo(f"file://{tmp_path}/a.avro", 1)]


def test_local_read_missing_file(tmp_path):
    """Reading a missing file raises StorageError naming it."""
    with pytest.raises(StorageError, match="not found"):
        LocalStorage().read_bytes(str(tmp_path / "missing.avro"))


def test_join_uri_slashes():
    """join_uri adds exactly one slash between parts."""
    assert join_uri("gs://b/prefix/", "/date=x/", "f.avro") == "gs://b/prefix/date=x/f.avro"
    assert join_uri("/tmp/a", "b") == "/tmp/a/b"


# ------------------------------------------------------------------- URIs


@pytest.mark.parametrize("uri", ["gs://", "gs://UPPER/x", "gs://a/x", "gs://bad bucket/x", "gs://x..y/z"])
def test_bad_gcs_uri_names_uri(uri):
    """A malformed gs:// URI fails with the URI and an example of a good one."""
    with pytest.raises(StorageError, match="invalid bucket name") as caught:
        open_storage(uri)
    assert repr(uri) in str(caught.value)
    assert "gs://my-archive/pipeline" in str(caught.value)


def test_unsupported_scheme():
    """s3:// and other schemes are rejected with the supported ones named."""
    with pytest.raises(StorageError, match="unsupported scheme 's3'"):
        open_storage("s3://bucket/x")


def test_parse_gcs_uri_parts():
    """parse_gcs_uri splits bucket and object name."""
    assert parse_gcs_uri("gs://my-bucket/a/b.avro") == ("my-bucket", "a/b.avro")
    assert parse_gcs_uri("gs://my-bucket") == ("my-bucket", "")


@pytest.mark.parametrize("error, transient", [
    (api_exceptions.TooManyRequests("slow down"), True),
    (api_exceptions.ServiceUnavailable("503"), True),
    (api_exceptions.InternalServerError("500"), True),
    (api_exceptions.GatewayTimeout("504"), True),
    (ConnectionResetError("reset"), True),
    (api_exceptions.Forbidden("403"), False),
    (api_exceptions.NotFound("404"), False),
    (api_exceptions.PreconditionFailed("412"), False),
])
def test_transient_error_classes(error, transient):
    """429, 5xx and broken connections are retried; 403, 404 and 412 are not."""
    assert _is_transient(error) is transient


# -------------------------------------------------------------------- GCS


def test_gcs_write_list_read(gcs_bucket):
    """Objects written to the emulator list recursively, sorted, hidden names skipped."""
    storage = open_storage(f"gs://{gcs_bucket}/archive")
    assert isinstance(storage, GcsStorage)
    base = f"gs://{gcs_bucket}/archive"
    for name in ["date=2024-03-09/phase=b/x.avro", "date=2024-03-09/phase=a/y.avro",
                 "date=2024-03-09/phase=a/_tmp.avro"]:
        storage.write_new(join_uri(base, name), b"abc")
    listed = [info.uri for info in storage.list(base)]
    assert listed == [f"{base}/date=2024-03-09/phase=a/y.avro", f"{base}/date=2024-03-09/phase=b/x.avro"]
    assert storage.list_dirs(base) == ["date=2024-03-09"]
    assert storage.list_dirs(f"{base}/date=2024-03-09") == ["phase=a", "phase=b"]
    assert storage.read_bytes(listed[0]) == b"abc"
    with storage.open_read(listed[0]) as source:
        assert source.read() == b"abc"


def test_gcs_write_new_refuses_overwrite(gcs_bucket):
    """write_new on an existing object raises ObjectExistsError and keeps the content."""
    storage = open_storage(f"gs://{gcs_bucket}/")
    uri = f"gs://{gcs_bucket}/a.avro"
    storage.write_new(uri, b"first")
    with pytest.raises(ObjectExistsError, match="never overwritten"):
        storage.write_new(uri, b"second")
    assert storage.read_bytes(uri) == b"first"


def test_gcs_missing_bucket_error(gcs_emulator):
    """A missing bucket fails with its name and the command that creates it."""
    storage = open_storage("gs://no-such-bucket-here/archive")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' not found") as caught:
        storage.list_dirs("gs://no-such-bucket-here/archive")
    assert "gcloud storage buckets create gs://no-such-bucket-here" in str(caught.value)


def test_gcs_missing_object_error(gcs_bucket):
    """Reading a missing object names the object, not the bucket."""
    storage = open_storage(f"gs://{gcs_bucket}/")
    with pytest.raises(StorageError, match="object .*missing.avro' not found"):
        storage.read_bytes(f"gs://{gcs_bucket}/missing.avro")


def test_gcs_exists(gcs_bucket):
    """exists() is false before a write and true after it."""
    storage = open_storage(f"gs://{gcs_bucket}/")
    uri = f"gs://{gcs_bucket}/e.avro"
    assert storage.exists(uri) is False
    storage.write_new(uri, b"1")
    assert storage.exists(uri) is True


class _FaultProxy:
    """A loopback HTTP proxy to the GCS emulator that fails the first requests of one method itself."""

    def __init__(self, target: str, *, method: str, status: int, failures: int) -> None:
        import http.client
        import http.server
        import urllib.parse

        target_url = urllib.parse.urlsplit(target)
        proxy = self
        self.requests: list[tuple[str, int]] = []
        self._remaining = failures

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == method and proxy._remaining > 0:
                    proxy._remaining -= 1
                    proxy.requests.append((self.command, status))
                    message = b'{"error": {"code": %d, "message": "injected"}}' % status
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(message)))
                    self.end_headers()
                    self.wfile.write(message)
                    return
                connection = http.client.HTTPConnection(target_url.hostname, target_url.port, timeout=30)
                headers = {key: value for key, value in self.headers.items() if key.lower() != "host"}
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                proxy.requests.append((self.command, response.status))
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                connection.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fault_proxy(gcs_emulator, monkeypatch):
    """Start a fault proxy in front of the GCS emulator and point STORAGE_EMULATOR_HOST at it."""
    proxies = []

    def start(**options) -> _FaultProxy:
        proxy = _FaultProxy(gcs_emulator.host, **options)
        proxies.append(proxy)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.host)
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()


def test_gcs_upload_retried_after_503(gcs_bucket, fault_proxy):
    """Two 503 responses to the upload are retried with backoff and the object is written once."""
    proxy = fault_proxy(method="POST", status=503, failures=2)
    storage = GcsStorage(retry_timeout_secs=30)
    uri = f"gs://{gcs_bucket}/retried.avro"
    storage.write_new(uri, b"payload")
    posts = [status for method, status in proxy.requests if method == "POST"]
    assert posts == [503, 503, 200]
    assert storage.read_bytes(uri) == b"payload"


def test_gcs_permission_error_not_retried(gcs_bucket, fault_proxy):
    """A 403 on upload fails at once, naming the URI and the role to grant."""
    proxy = fault_proxy(method="POST", status=403, failures=5)
    storage = GcsStorage(retry_timeout_secs=30)
    uri = f"gs://{gcs_bucket}/denied.avro"
    with pytest.raises(StorageError, match="permission denied to write") as caught:
        storage.write_new(uri, b"payload")
    assert uri in str(caught.value)
    assert "roles/storage.objectCreator" in str(caught.value)
    assert [status for method, status in proxy.requests if method == "POST"] == [403]


def closed_loopback_port() -> int:
    """Return a loopback port nothing listens on (bound once, then released)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_gcs_unreachable_error_names_endpoint(monkeypatch):
    """A refused connection is retried with a warning, then one error names the URI and STORAGE_EMULATOR_HOST."""
    import structlog

    port = closed_loopback_port()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    storage = GcsStorage(retry_timeout_secs=1)
    with structlog.testing.capture_logs() as logs:
        with pytest.raises(StorageError) as caught:
            storage.list_dirs("gs://no-bucket/archive")
    message = str(caught.value)
    assert "gs://no-bucket/archive" in message
    assert f"127.0.0.1:{port}" in message
    assert "STORAGE_EMULATOR_HOST" in message
    assert "RetryError" not in message
    assert any(entry["event"] == "storage.retrying" for entry in logs)


def test_cli_ls_unreachable_gcs_one_line(monkeypatch, capsys):
    """replay ls on an unreachable gs:// archive ends with one error line naming the URI, exit status 2."""
    from replayer.cli import main

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{closed_loopback_port()}")
    with pytest.raises(SystemExit) as exited:
        main(["ls", "gs://no-bucket/archive", "--retry-timeout-secs", "1"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert exited.value.code == 2
    assert len(errors) == 1
    assert "gs://no-bucket/archive" in errors[0]
    assert "STORAGE_EMULATOR_HOST" in errors[0]
