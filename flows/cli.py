"""The ``lookalike`` command line.

``build`` and ``export`` run as Prefect flows when a Prefect server is configured or answers on
the default local port, and as the same library steps in this process otherwise
(:mod:`flows.runners`). Every argument, input path and the workdir's current build is checked
before anything starts. Progress goes to stderr, one line per stage with the seconds since the
start (Prefect's own log only with ``--verbose``); results go to stdout; a failure ends with one
line ``error: ...`` and exit code 1.
"""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args

import typer

from flows.console import Console
from flows.runners import LocalRunner, PrefectRunner, Runner, check_task_runner, use_prefect
from lookalike.core.errors import LookalikeError

app = typer.Typer(
    help="Lookalike audiences from first-party data: build a model and index, export audiences.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
F = TypeVar("F", bound=Callable[..., Any])
_state = {"debug": False, "verbose": False}
ConfigFile = Annotated[Path | None, typer.Option(help="Config file (YAML/JSON/TOML).")]
CurrentWorkdir = Annotated[str, typer.Option(help="Workdir with a current build (a folder or s3://bucket/prefix).")]
Conversions = Annotated[str, typer.Option(help="Conversions table (Parquet/CSV, file/dir/glob).")]
Events = Annotated[str | None, typer.Option(help="Events table.")]
Profiles = Annotated[str | None, typer.Option(help="Profiles table.")]
AsOf = Annotated[str | None, typer.Option("--as-of", help="Feature cutoff (ISO time); default: latest event.")]
PrefectChoice = Annotated[bool | None, typer.Option(
    "--prefect/--no-prefect",
    help="Run as Prefect flows (starting Prefect's temporary server when none is found), or "
         "never; default: flows when a Prefect server is configured or answers on port 4200.",
    show_default=False,
)]


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose",
                                          help="Show Prefect's own log lines.")] = False,
) -> None:
    _state["debug"], _state["verbose"] = debug, verbose


def main() -> None:
    """The ``lookalike`` console script: usage mistakes end like every other failure."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # a usage mistake: an option missing or invalid
        if (context := getattr(exc, "ctx", None)) is not None:
            typer.echo(f"{context.get_usage()}\nTry '{context.command_path} --help' for help.",
                       err=True)
        typer.echo(f"error: {exc.format_message()}", err=True)
        code = exc.exit_code
    except typer.Abort:
        typer.echo("error: interrupted", err=True)
        code = 130
    sys.exit(code or 0)


def fails_cleanly(command: F) -> F:
    """Turn errors into one last line ``error: ...`` on stderr and exit code 1 (a traceback
    first only with --debug)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except LookalikeError as exc:
            _fail(f"error: {exc}")
        except Exception as exc:
            _fail(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for details)")

    return wrapper  # type: ignore[return-value]


def _fail(message: str) -> None:
    if _state["debug"]:
        traceback.print_exc()
    typer.echo(message.splitlines()[0] if message else "error", err=True)
    raise typer.Exit(code=1)


def check_inputs(*paths: str | None) -> None:
    """Every given table path exists: a file, a folder of parts or a glob that matches."""
    from lookalike.data.files import resolve_files

    for path in paths:
        if path is not None:
            resolve_files(path)


def runner(console: Console, prefect: bool | None,
           task_runner: dict[str, Any] | None = None) -> Runner:
    """Prefect flows or the library in this process (:func:`flows.runners.use_prefect`)."""
    if use_prefect(prefect, console, needs_prefect=bool(task_runner)):
        return PrefectRunner(console, verbose=_state["verbose"], debug=_state["debug"],
                             task_runner=task_runner)
    return LocalRunner(console)


@app.command()
@fails_cleanly
def generate(
    users: Annotated[int, typer.Option("--users", min=100, help="Number of users to generate.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for events, profiles, conversions.")],
    events_per_user: Annotated[float, typer.Option(help="Mean events per user.")] = 50.0,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 0,
) -> None:
    """Write synthetic events, profiles and conversions from a hidden latent model."""
    from lookalike.data.synthetic import generate as generate_data

    data = generate_data(out, users, events_per_user=events_per_user, seed=seed,
                         progress=Console().progress)
    typer.echo(f"wrote {data.events}, {data.profiles}, {data.conversions} (ground truth: {data.truth})")


@app.command()
@fails_cleanly
def build(
    workdir: Annotated[str, typer.Option(help="Folder (or s3://bucket/prefix) that keeps versioned builds.")],
    conversions: Conversions,
    events: Events = None,
    profiles: Profiles = None,
    as_of: AsOf = None,
    config: ConfigFile = None,
    task_runner: Annotated[str, typer.Option(help="default (threads here) or dask.")] = "default",
    dask_address: Annotated[str | None, typer.Option(help="Dask scheduler (tcp://host:8786); default: a local 2-worker cluster.")] = None,
    prefect: PrefectChoice = None,
    refresh: Annotated[bool, typer.Option(
        "--refresh", help="Reuse the current build's encoder (no training), even when drift or "
        "train.retrain_interval_days would retrain; fails when its settings differ.")] = False,
    retrain: Annotated[bool, typer.Option(
        "--retrain", help="Train a new encoder. Default: reuse the current build's encoder "
        "unless its settings differ, it is train.retrain_interval_days old or drift crosses a "
        "drift limit.")] = False,
) -> None:
    """Validate inputs and build features, model, embeddings and index into WORKDIR."""
    check_task_runner(task_runner)
    if events is None and profiles is None:
        raise LookalikeError("give at least one of --events or --profiles")
    if refresh and retrain:
        raise LookalikeError("give --refresh or --retrain, not both")
    check_inputs(events, profiles, conversions)
    from lookalike.core.config import load_config
    from lookalike.data.features import parse_as_of

    load_config(config)
    parse_as_of(as_of)
    options = None
    if task_runner != "default":
        from flows.common import task_runner_options

        options = task_runner_options(task_runner, dask_address)
    result = runner(Console(), prefect, options).build(
        workdir=workdir, conversions=conversions, events=events, profiles=profiles,
        as_of=as_of, config_path=str(config) if config else None,
        mode="refresh" if refresh else "retrain" if retrain else "auto")
    typer.echo(f"build {result['build_id']} at {result['path']}")


@app.command()
@fails_cleanly
def export(
    workdir: CurrentWorkdir,
    seeds: Annotated[str, typer.Option(help="Seed list: user_id and optional weight (Parquet/CSV).")],
    out: Annotated[str, typer.Option(help="Audience Parquet file to write (atomically; s3:// uploads the reports, then the audience).")],
    size: Annotated[int | None, typer.Option(min=1, help="Audience size in users.")] = None,
    fraction: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Audience size as a fraction of eligible users.")] = None,
    exclude: Annotated[str | None, typer.Option(help="Users never to include (user_id list).")] = None,
    eligible: Annotated[str | None, typer.Option(help="The only users that may be included.")] = None,
    strategy: Annotated[str | None, typer.Option(help="hybrid (the default), contrast, density, knn, clusters or centroid; default from config.")] = None,
    min_score: Annotated[float | None, typer.Option(help="Drop users scoring below this score (the strategy's scale: see the score column in the README).")] = None,
    name: Annotated[str | None, typer.Option(help="Audience name for overlap with its last export.")] = None,
    config: ConfigFile = None,
    hash_kind: Annotated[str | None, typer.Option("--hash", help="email or phone: add a SHA-256 hashed_<kind> column for upload.")] = None,
    platform: Annotated[str | None, typer.Option(help="google or meta: the platform's normalization rules (with --hash).")] = None,
    identifiers: Annotated[str | None, typer.Option(help="Table of user_id and the email/phone column (with --hash).")] = None,
    id_column: Annotated[str | None, typer.Option("--id-column", help="Identifier column in --identifiers (default: the --hash kind).")] = None,
    audit_profiles: Annotated[str | None, typer.Option("--audit-profiles", help="Profiles table the config's privacy.audit_columns are read from (default: the build's profiles).")] = None,
    prefect: PrefectChoice = None,
) -> None:
    """Write the users most similar to SEEDS as a Parquet audience plus a report."""
    if (size is None) == (fraction is None):
        raise LookalikeError("give exactly one of --size or --fraction")
    hashing = _hashing_options(hash_kind, platform, identifiers, id_column)
    from lookalike.core.config import StrategyName, load_config
    from lookalike.object_store import require_current

    if strategy is not None and strategy not in get_args(StrategyName):
        raise LookalikeError(f"unknown strategy '{strategy}': use one of "
                             f"{', '.join(get_args(StrategyName))}")
    require_current(workdir)
    check_inputs(seeds, exclude, eligible, identifiers, audit_profiles)
    load_config(config)
    result = runner(Console(), prefect).export(
        workdir=workdir, seeds=seeds, out=out, size=size, fraction=fraction,
        exclude=exclude, eligible=eligible, strategy=strategy, min_score=min_score, name=name,
        config_path=str(config) if config else None, hashing=hashing,
        audit_profiles=audit_profiles)
    summary = result["summary"]
    typer.echo(f"audience: {result['audience']} ({summary['size']:,} users)")
    if hashing is not None:
        counts = summary["hashing"]
        typer.echo(f"hashed {counts['hashed']} {hash_kind}s for {platform}; {counts['missing']} users "
                   f"without one, {counts['invalid']} invalid")
    typer.echo(f"report:   {result['report_md']}, {result['report_html']}")


def _hashing_options(kind: str | None, platform: str | None, identifiers: str | None,
                     column: str | None) -> dict[str, str] | None:
    if kind is None:
        if platform or identifiers or column:
            raise LookalikeError("--platform, --identifiers and --id-column need --hash email|phone")
        return None
    if kind not in ("email", "phone") or platform not in ("google", "meta") or not identifiers:
        raise LookalikeError("--hash takes email or phone, with --platform google|meta and "
                             "--identifiers FILE (user_id and the identifier column)")
    options = {"kind": kind, "platform": platform, "identifiers": identifiers}
    return options if column is None else {**options, "column": column}


@app.command()
@fails_cleanly
def erase(
    workdir: CurrentWorkdir,
    users: Annotated[str, typer.Option(help="Users to erase: a user list (user_id column).")],
    config: ConfigFile = None,
) -> None:
    """Physically remove USERS from the current build and last exports; delete older builds."""
    from lookalike.core.config import load_config
    from lookalike.object_store import require_current

    require_current(workdir)
    check_inputs(users)
    cfg = load_config(config)
    from lookalike.erasure import erase_users
    from lookalike.object_store import erase_at

    report = erase_at(workdir, lambda local: erase_users(local, users, cfg,
                                                         progress=Console().progress))
    typer.echo(f"build {report.build_id}: removed {report.rows_removed}; deleted older builds "
               f"{report.builds_deleted or 'none'}")


@app.command()
@fails_cleanly
def serve(
    config: Annotated[Path, typer.Option(help="Config with a schedule section (cron, inputs, audiences).")],
) -> None:
    """Register the scheduled pipeline and the ad-hoc export deployments and run them until stopped.

    Needs a Prefect server: start one with `prefect server start` (SQLite by default) and set
    PREFECT_API_URL=http://127.0.0.1:4200/api. Trigger a run by hand with
    `prefect deployment run 'lookalike-pipeline/scheduled'`; export an audience from the UI or with
    `prefect deployment run 'lookalike-export/adhoc' -p seeds=/abs/seeds.csv -p out=/abs/a.parquet
    -p fraction=0.05` (the report is among the run's artifacts). Stop with Ctrl-C (SIGINT/SIGTERM).
    """
    from flows.deploy import check_server, serve_pipeline

    typer.echo(f"serving {check_server()} with the schedule of {config}", err=True)
    serve_pipeline(config)


@app.command()
@fails_cleanly
def evaluate(
    workdir: Annotated[Path, typer.Option(help="Folder for the evaluation's features and model.")],
    conversions: Conversions,
    out: Annotated[Path, typer.Option(help="Folder for evaluation.json, evaluation.md and gains.png.")],
    events: Events = None,
    profiles: Profiles = None,
    as_of: AsOf = None,
    config: ConfigFile = None,
) -> None:
    """Hold out converters, train without them, and compare audiences with baselines on them."""
    if events is None and profiles is None:
        raise LookalikeError("give at least one of --events or --profiles")
    check_inputs(events, profiles, conversions)
    from lookalike.core.config import load_config

    cfg = load_config(config)
    from lookalike.evaluation.evaluate import evaluate as run_evaluation

    result = run_evaluation(workdir, conversions, out, events=events, profiles=profiles,
                            as_of=as_of, config=cfg, progress=Console().progress)
    typer.echo(result.report_md.read_text())
    typer.echo(f"report: {result.report_md}, {result.report_json}, {result.gains_png}")


@app.command()
@fails_cleanly
def demo(
    dir: Annotated[Path, typer.Option("--dir", help="Folder for the demo's data, builds and audience.")] = Path("demo"),
    users: Annotated[int, typer.Option(min=20_000, help="Synthetic users to generate.")] = 50_000,
    prefect: PrefectChoice = None,
) -> None:
    """Generate sample data, build, export a lookalike audience and print where it is."""
    from flows.demo import run_demo

    console = Console()
    result = run_demo(dir, runner(console, prefect), users=users, progress=console.progress)
    hits = result.hits
    typer.echo("")
    typer.echo(f"audience: {result.audience} ({result.size} users)")
    typer.echo(f"report:   {result.report}, {result.report_html} (plots)")
    typer.echo(f"seeds: {result.seeds} converters of '{result.seed_type}', a conversion type the "
               f"model never trained on")
    typer.echo(f"held-out '{result.seed_type}' converters in the audience: {hits.hits} of "
               f"{hits.positives} (recall {hits.recall:.1%}); lift over random {hits.lift:.2f}x")


if __name__ == "__main__":
    main()
