"""Core pieces every stage shares: the typed configuration (``config``), the error types (``errors``),
atomic and checksummed file writes (``artifacts``), the workdir's layout with its versioned builds
and ``current`` pointer (``workdir``), the progress callback type (``progress``) and thread sizing
(``parallel``). Nothing here knows about users, features or models.
"""
