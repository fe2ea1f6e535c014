"""What every flow shares: retry policy for I/O tasks and the run logger."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger

IO_RETRIES = 2
IO_RETRY_DELAYS = [2.0, 10.0]


def log(message: str) -> None:
    """Progress line in the current flow or task run's log."""
    get_run_logger().info(message)


def is_transient_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only I/O failures (a flaky mount, a network file system); bad input fails at once."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False
