"""Writing the archive: storage backends, the Avro archive writer and reader,
the recorder SDK, the Flask push middleware, the Pub/Sub tap and importers.

Importable without Apache Beam, so a production Flask service can record.
"""

from recorder._envelope import (
    ACK_STATUS_CODES,
    EnvelopeError,
    PushMessage,
    build_push_envelope,
    is_ack_status,
    parse_push_envelope,
)
from recorder._logging import configure_logging, get_logger
from recorder._redaction import RedactionRules
from recorder._sdk import Handling, Recorder, RecorderStats

__all__ = [
    "ACK_STATUS_CODES",
    "EnvelopeError",
    "Handling",
    "PushMessage",
    "Recorder",
    "RecorderStats",
    "RedactionRules",
    "build_push_envelope",
    "configure_logging",
    "get_logger",
    "is_ack_status",
    "parse_push_envelope",
]
