"""Broadcast fan-out benchmarks: load generator, reference peers and scenarios.

``python -m benchmarks.run`` runs the scenarios and writes ``RESULTS.md``;
``python -m benchmarks.loadgen`` runs one load against one target.
"""
