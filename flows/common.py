"""What every flow shares: retry policy for I/O tasks and the run logger."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger

from flows.console import PROGRESS_FLAG
from flows.runners import check_task_runner

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

    ``default`` is Prefect's thread pool in this process; ``dask`` runs the submitted and mapped
    tasks (the feature, embedding and index partitions, see ``flows/build.py``) on Dask workers:
    a local cluster of ``workers`` single-threaded processes on 127.0.0.1, or the scheduler at
    ``address``.
    """
    check_task_runner(name)
    if name == "default":
        return {}
    from prefect_dask import DaskTaskRunner

    if address:
        return {"task_runner": DaskTaskRunner(address=address)}
    return {"task_runner": DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                                                          "processes": True, "host": "127.0.0.1"})}

