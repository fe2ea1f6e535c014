"""What keeps people's data in bounds at every stage: proxy checks of allowed features against
denied columns (``proxies``), the fairness audit of each export's groups (``audit``), opt-out
suppression (``suppression``) and platform-normalized hashed identifiers for exports
(``hashing``). The right to erasure, which reaches every build and export
of a workdir, is :mod:`lookalike.erasure`.
"""
