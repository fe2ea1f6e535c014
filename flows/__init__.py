"""Prefect flows and the ``lookalike`` command line.

Prefect reads its settings when first imported, so the defaults that make the embedded mode
(no server configured) reliable on a small machine are set here, before any flow module imports it.
"""

import os

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "lookalike")
