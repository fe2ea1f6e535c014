"""Helpers the test suite and the benchmarks share, as ``numpy.testing`` is shipped with numpy: toy
feature tables with a known latent structure (``toy_tables``), small end-to-end data and fast
configs (``fixtures``), and the SIGKILL trial harness (``kill_harness``). Nothing in the pipeline
imports them.
"""
