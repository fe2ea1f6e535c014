"""The first stage: input tables to features. The input contract's column names (``schema``), reading
and checking events, profiles and conversions (``ingest``), point-in-time features per user
(``features``), the fitted feature specification that turns feature rows into model inputs
(``spec``), and the synthetic generator used by the demo and the regression benchmarks
(``synthetic``).
"""
