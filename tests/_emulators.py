"""Starts Google's Pub/Sub emulator and gcp-storage-emulator on loopback.

Both run as child processes on 127.0.0.1 and a free port, once per test
session. When an emulator cannot start, tests that need it are skipped with
the reason, unless REPLAY_REQUIRE_EMULATORS=1 (set by .ci/run), which turns
the skip into a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"
PUBSUB_EMULATOR_CANDIDATES = (
    Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"),
    Path("/usr/share/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"),
)


def emulators_required() -> bool:
    """True when a missing emulator must fail the run instead of skipping."""
    return os.environ.get("REPLAY_REQUIRE_EMULATORS") == "1"


def unavailable(reason: str) -> None:
    """Skip the requesting test, or fail it when emulators are required."""
    if emulators_required():
        pytest.fail(f"{reason} (REPLAY_REQUIRE_EMULATORS=1 makes this an error)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """Return a TCP port that is free on the loopback address right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float, log_path: Path) -> None:
    """Wait until ``port`` accepts connections; raise with the log tail if it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.5):
            return
        time.sleep(0.1)
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    raise RuntimeError(f"emulator on {LOOPBACK}:{port} did not start within {timeout_s} s:\n{tail}")


def stop(process: subprocess.Popen) -> None:
    """Terminate an emulator process group and wait for it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait(timeout=10)


class GcsEmulator:
    """A running gcp-storage-emulator (in memory) on loopback."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.host = f"http://{LOOPBACK}:{self.port}"
        self.log_path = log_dir / f"gcs-emulator-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "GcsEmulator":
        command = [sys.executable, "-m", "gcp_storage_emulator", "start",
                   "--host", LOOPBACK, "--port", str(self.port), "--in-memory"]
        if shutil.which("gcp-storage-emulator"):
            command = ["gcp-storage-emulator", *command[3:]]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for_port(self.port, self.process, 30, self.log_path)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


class PubSubEmulator:
    """A running Google Pub/Sub emulator on loopback."""

    def __init__(self, binary: Path, log_dir: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.host = f"{LOOPBACK}:{self.port}"
        self.project = "replay-test"
        self.log_path = log_dir / f"pubsub-emulator-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "PubSubEmulator":
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(self.binary), f"--host={LOOPBACK}", f"--port={self.port}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_for_port(self.port, self.process, 60, self.log_path)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


def find_pubsub_emulator() -> Path | None:
    """Return the emulator launcher installed with the Google Cloud CLI, if any.

    ``REPLAY_PUBSUB_EMULATOR`` names the launcher of an installation elsewhere,
    and ``gcloud`` on the PATH is searched for the component too.
    """
    candidates = list(PUBSUB_EMULATOR_CANDIDATES)
    gcloud = shutil.which("gcloud")
    if gcloud:
        sdk_root = Path(gcloud).resolve().parent.parent
        candidates.insert(0, sdk_root / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator")
    if os.environ.get("REPLAY_PUBSUB_EMULATOR"):
        candidates.insert(0, Path(os.environ["REPLAY_PUBSUB_EMULATOR"]))
    if not shutil.which("java"):
        return None
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return None
