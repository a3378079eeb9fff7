"""Deterministic synthetic acquisitions with ground truth (``pyama synth``), and the scorer
that compares processed traces with that truth (``pyama score``): for the demo, the tests and
the accuracy benchmark.
"""
