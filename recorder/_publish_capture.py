"""Capture of ``PublisherClient.publish`` calls made while a message is handled.

One process-wide patch of ``google.cloud.pubsub_v1.PublisherClient.publish``,
installed by the first recorder that requests it and removed when the last
one releases it (reference counted, idempotent). The patched method always
calls the real one and returns its future unchanged; when a handling context
is active in the calling context (a ``contextvars`` variable, so concurrent
messages on other threads or tasks do not mix), it also hands the call to
that context, which records the publish as an OUTPUT once the future yields
the message id.

A thread started inside a handler does not inherit the context unless it is
started through ``contextvars.copy_context().run`` (or an executor that
copies it); publishes from such a thread are not recorded.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Any, Callable

# The handling context of the message being processed in this context, or None.
current_handling: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "pipeline_replay_current_handling", default=None
)

_lock = threading.Lock()
_references = 0
_original_publish: Callable[..., Any] | None = None
_patched_publish: Callable[..., Any] | None = None

# Keyword arguments of PublisherClient.publish that are not message attributes.
_NON_ATTRIBUTE_KEYWORDS = frozenset({"ordering_key", "retry", "timeout"})


def split_publish_arguments(args: tuple, kwargs: dict) -> tuple[str | None, dict[str, str]]:
    """Return ``(ordering_key, attributes)`` from the arguments after ``topic, data``."""
    ordering_key = args[0] if args else kwargs.get("ordering_key", "")
    attributes: dict[str, str] = {}
    for key, value in kwargs.items():
        if key in _NON_ATTRIBUTE_KEYWORDS:
            continue
        attributes[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return (ordering_key or None), attributes


def _make_patched(original: Callable[..., Any]) -> Callable[..., Any]:
    def publish(self, topic, data, *args, **kwargs):
        handling = current_handling.get()
        if handling is None:
            return original(self, topic, data, *args, **kwargs)
        publish_context = handling.before_publish()
        future = original(self, topic, data, *args, **kwargs)
        handling.after_publish(publish_context, topic, data, args, kwargs, future)
        return future

    publish.__wrapped__ = original  # type: ignore[attr-defined]
    publish.__doc__ = original.__doc__
    publish.__name__ = getattr(original, "__name__", "publish")
    return publish


def acquire_publish_patch() -> bool:
    """Install the patch (once) and take a reference; False if pubsub is not importable."""
    global _references, _original_publish, _patched_publish
    try:
        from google.cloud.pubsub_v1 import PublisherClient
    except ImportError:
        return False
    with _lock:
        if _references == 0:
            _original_publish = PublisherClient.publish
            _patched_publish = _make_patched(_original_publish)
            PublisherClient.publish = _patched_publish
        _references += 1
    return True


def release_publish_patch() -> None:
    """Drop a reference; the last one restores the original method."""
    global _references, _original_publish, _patched_publish
    from google.cloud.pubsub_v1 import PublisherClient

    with _lock:
        if _references == 0:
            return
        _references -= 1
        if _references > 0:
            return
        # Restore only if nobody patched over us since; otherwise leave their
        # patch in place (ours stays harmless underneath it).
        if PublisherClient.__dict__.get("publish") is _patched_publish:
            PublisherClient.publish = _original_publish
        _original_publish = None
        _patched_publish = None


def publish_patch_references() -> int:
    """Return how many recorders hold the publish patch."""
    return _references
