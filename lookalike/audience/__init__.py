"""The last stage: a seed list to an audience. Seed matching and validation, candidate selection and
tiers, the expansion strategies (``expansion``), the gradient-boosted propensity model the hybrid
strategy adds (``propensity``), the export of a Parquet audience with its metadata and export
history (``export``) and the report beside it (``report``).
"""
