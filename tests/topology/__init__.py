"""A small three-phase topology for replay tests: phase2 (a callable and a Flask
app behind push), phase3 (a stateful fan-in orchestrator), phase4 (a callable)."""
