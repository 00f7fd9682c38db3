"""JSON pointers (RFC 6901) for date rules, match keys and redaction."""

from typing import Any

MISSING = object()


def split_pointer(pointer: str) -> list[str]:
    """Split ``/a/b~1c`` into ``["a", "b/c"]``; raise ValueError on a bad pointer."""
    if pointer == "":
        return []
    if not isinstance(pointer, str) or not pointer.startswith("/"):
        raise ValueError(
            f"JSON pointer {pointer!r} must start with '/', e.g. '/game_date'"
        )
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def resolve_pointer(document: Any, pointer: str | list[str], default: Any = MISSING) -> Any:
    """Return the value at ``pointer`` in ``document``, or ``default`` when absent."""
    parts = split_pointer(pointer) if isinstance(pointer, str) else pointer
    node = document
    for part in parts:
        if isinstance(node, dict):
            if part not in node:
                return default
            node = node[part]
        elif isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return default
            node = node[int(part)]
        else:
            return default
    return node
