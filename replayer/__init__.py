"""Everything a replay needs besides Beam: configuration, processor adapters,
the sandbox, pacing, diff, validation, reports and the ``replay`` CLI."""
