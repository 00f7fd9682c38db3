"""Packaging for pipeline-replay.

The same file serves ``pip install`` and Beam's ``--setup_file`` for Dataflow
workers. The base install is what a production service needs to record
(no Beam); the ``replay`` extra adds the Beam pipeline and everything
``replay run`` and ``replay demo`` need.
"""

from setuptools import find_packages, setup

RECORDER_REQUIRES = [
    "fastavro>=1.9,<2",
    "structlog>=23.1",
    "google-cloud-storage>=2.10",
    "google-cloud-pubsub>=2.18",
    # Codec libraries fastavro loads lazily: snappy needs cramjam, zstandard
    # needs backports.zstd before Python 3.14 (compression.zstd after).
    "cramjam>=2.7",
    "backports.zstd>=1.0; python_version < '3.14'",
    "click>=8.1",
    "rich>=13",
    "orjson>=3.9",
    "tomli>=2.0; python_version < '3.11'",
]

REPLAY_REQUIRES = [
    "apache-beam[gcp]>=2.60,<3",
    "time-machine>=2.13",
    "flask>=2.3",
    "requests>=2.31",
    # Beam builds the package for Dataflow workers from --setup_file with
    # setuptools, which Python 3.12 and newer no longer put in a new venv.
    "setuptools>=61",
]

TEST_REQUIRES = REPLAY_REQUIRES + [
    "pytest>=7.4",
    "pytest-timeout>=2.2",
    "hypothesis>=6.90",
    "gcp-storage-emulator>=2024.8",
    "deepdiff>=6.7",
    # Reads the headless-Chromium screenshot of report.html in the report tests.
    "Pillow>=9.0",
]

setup(
    name="pipeline-replay",
    version="0.1.0",
    description=(
        "Record every message between the phases of a Pub/Sub data pipeline and "
        "replay any recorded date through the processors, diffing the outputs."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[
        "schemas", "recorder", "recorder.*", "replayer", "replayer.*",
        "pipelines", "pipelines.*", "examples", "examples.*",
    ]),
    package_data={
        "schemas": ["*.avsc"],
        "replayer": ["templates/*"],
        "examples.nba": ["*.toml", "data/*"],
    },
    install_requires=RECORDER_REQUIRES,
    extras_require={
        "replay": REPLAY_REQUIRES,
        "flask": ["flask>=2.3"],
        "test": TEST_REQUIRES,
    },
    entry_points={"console_scripts": ["replay = replayer.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    ],
)
