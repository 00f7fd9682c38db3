"""Beam pipelines and PTransforms of pipeline-replay (the only package that imports Beam)."""
