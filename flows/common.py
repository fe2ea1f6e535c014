"""What every flow shares: retry policy for I/O tasks and the run logger."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger

from flows.console import PROGRESS_FLAG
from flows.runners import check_task_runner
from lookalike.core.errors import LookalikeError

IO_RETRIES = 2
IO_RETRY_DELAYS = [2.0, 10.0]


def log(message: str) -> None:
    """Progress line in the current flow or task run's log (the command line prints these)."""
    get_run_logger().info(message, extra={PROGRESS_FLAG: True})


def is_transient_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only I/O failures (a flaky mount, a network file system); bad input fails at once."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False


def task_runner_options(name: str, address: str | None = None, workers: int = 2) -> dict[str, Any]:
    """``flow.with_options`` keywords for the chosen task runner.

    ``default`` is Prefect's thread pool in this process; ``dask`` runs tasks (the index shards)
    on Dask workers: a local cluster of ``workers`` processes, or the scheduler at ``address``.
    """
    check_task_runner(name)
    if name == "default":
        return {}
    from prefect_dask import DaskTaskRunner

    if address:
        return {"task_runner": DaskTaskRunner(address=address)}
    return {"task_runner": DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                                                          "processes": True})}


def local_only(*locations: str | None) -> None:
    """Raise :class:`LookalikeError` for an object-store URL: the flows run their steps on local
    folders; ``lookalike build|export --no-prefect`` mirrors and publishes a remote workdir
    (:mod:`lookalike.object_store`).

    Example:
        >>> local_only("work", None)
    """
    from lookalike.object_store import is_remote

    for place in locations:
        if place is not None and is_remote(place):
            raise LookalikeError(f"{place}: the Prefect flows read and write local folders only; "
                                 "run the command with --no-prefect for an s3:// workdir or output")
