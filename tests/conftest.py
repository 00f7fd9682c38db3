"""Session fixtures shared by the whole suite: emulators, shared data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests._emulators import (
    GcsEmulator,
    PubSubEmulator,
    find_pubsub_emulator,
    unavailable,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = Path(__file__).resolve().parent / "data"
CASES = TEST_DATA / "cases"
REALDATA = TEST_DATA / "realdata"


@pytest.fixture(scope="session")
def cases_dir() -> Path:
    """Small failing inputs reduced from public bug reports, one folder per kind of fault."""
    return CASES


@pytest.fixture(scope="session")
def realdata_dir() -> Path:
    """Real payloads and phase messages of the NBA pipeline for 2024-01-15."""
    return REALDATA


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    """gcp-storage-emulator on 127.0.0.1; sets STORAGE_EMULATOR_HOST for the session."""
    try:
        import gcp_storage_emulator  # noqa: F401
    except ImportError:
        unavailable("gcp-storage-emulator is not installed; pip install '.[test]'")
    emulator = GcsEmulator(tmp_path_factory.mktemp("gcs-emulator"))
    try:
        emulator.start()
    except (OSError, RuntimeError) as error:
        unavailable(f"gcp-storage-emulator did not start: {error}")
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = emulator.host
    os.environ.setdefault("NO_GCE_CHECK", "true")
    yield emulator
    emulator.stop()
    if previous is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = previous


@pytest.fixture
def gcs_bucket(gcs_emulator, request):
    """A fresh bucket on the GCS emulator; yields its name."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="replay-test", credentials=AnonymousCredentials())
    name = "bucket-" + request.node.name.lower().replace("_", "-")[:40].strip("-[]")
    name = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in name)
    bucket = client.bucket(name)
    if not bucket.exists():
        client.create_bucket(name)
    return name


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory):
    """Google's Pub/Sub emulator on 127.0.0.1; sets PUBSUB_EMULATOR_HOST for the session."""
    binary = find_pubsub_emulator()
    if binary is None:
        unavailable("the Pub/Sub emulator (Google Cloud CLI component) or java is not installed")
    emulator = PubSubEmulator(binary, tmp_path_factory.mktemp("pubsub-emulator"))
    try:
        emulator.start()
    except (OSError, RuntimeError) as error:
        unavailable(f"the Pub/Sub emulator did not start: {error}")
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
    os.environ.setdefault("PUBSUB_PROJECT_ID", emulator.project)
    yield emulator
    emulator.stop()
    if previous is None:
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)
    else:
        os.environ["PUBSUB_EMULATOR_HOST"] = previous
