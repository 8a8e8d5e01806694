"""The ``fdiot`` command line: run the farm (``up``, ``agent``, ``down``) and use it (``devices``,
``profile``, ``bench``, ``predict``, ``models``, ``token create``).

Every command that talks to the server goes through :class:`fdiot.client.FarmClient`; an error
answer prints the server's message on stderr and exits with status 1 (no traceback). ``--json``
prints the server's answer as JSON on stdout, for scripts.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from fdiot.client import FarmClient, FarmError
from fdiot.settings import get_settings

app = typer.Typer(
    name="fdiot",
    help="FastDeepIoT Farm: per-device execution-time models learned from real measurements.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
token_app = typer.Typer(help="Manage API tokens (admin).", no_args_is_help=True)
app.add_typer(token_app, name="token")

console = Console()
err_console = Console(stderr=True)

# The CLI gives a server that is not answering this long before reporting it (seconds): enough to
# ride over a restart, short enough that "server not running" is reported promptly.
CLI_RETRY_FOR_S = 2.0
# Share of a campaign's samples left out as disturbed above which the CLI warns of a noisy host.
# On this project's 2-core VM a quiet default campaign left out 16 of 2500 (0.6%), one on a noisy
# host 688 of 2500 (28%, bench/results/accuracy.json of 2026-11-29 11:58), with conv2d CV MAPE
# 5.0% against 8.4%.
NOISY_HOST_SHARE = 0.1
# How often progress is polled while waiting on a campaign or job (seconds).
POLL_S = 1.0
# Roles started by `fdiot up`, in start order (names of fdiot.processes.ROLES).
UP_ROLES = ("server", "fit-worker", "agent")
# `up` restarts a child that died on its own after this pause (seconds), so a crash loop
# does not spin the CPU.
RESTART_PAUSE_S = 2.0

_options: dict[str, str | None] = {"url": None, "token": None}


@app.callback()
def _main(
    url: Annotated[
        str | None, typer.Option(help="Server URL (default: FDIOT_URL).", show_default=False)
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="API token (default: FDIOT_TOKEN, else the local admin token)."),
    ] = None,
) -> None:
    _options["url"] = url
    _options["token"] = token
    # The client logs each retry for the agent's log; a CLI user sees only the final error.
    logging.getLogger("fdiot.client").setLevel(logging.ERROR)


def _client() -> FarmClient:
    return FarmClient(
        base_url=_options["url"], token=_options["token"], retry_for_s=CLI_RETRY_FOR_S
    )


@contextmanager
def _farm_errors() -> Iterator[None]:
    """Turn a server error into its message on stderr and exit status 1."""
    try:
        yield
    except FarmError as exc:
        prefix = f"error ({exc.status_code})" if exc.status_code else "error"
        err_console.print(
            f"[red]{prefix}:[/red] {escape(exc.detail)}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(1) from None
    except TimeoutError as exc:
        err_console.print(f"[red]timeout:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def _check_model_file(path: Path) -> None:
    if not path.is_file():
        err_console.print(f"[red]error:[/red] {path} is not a file")
        raise typer.Exit(2)


def _split_op_types(values: list[str] | None) -> list[str] | None:
    """Accept ``--op-types conv2d,fully_connected`` as well as repeated options."""
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


DeviceOption = Annotated[
    int, typer.Option("--device", "-d", help="Device id (see `fdiot devices`).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")]


# -- running the farm ------------------------------------------------------------------------
@app.command()
def up() -> None:
    """Run the whole farm in the foreground until Ctrl-C / SIGTERM.

    Starts embedded PostgreSQL and Redis where DATABASE_URL / REDIS_URL are unset, applies the
    migrations, then runs the API server, the fit worker and a local-CPU agent as child processes
    (restarted if they die). Ctrl-C stops the children; the embedded database and Redis keep
    running so that the next `fdiot up` starts in seconds: `fdiot down` stops them.
    """
    from fdiot.processes import FarmProcesses, reserve_measurement_core
    from fdiot.stack import ensure_stack

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    # Children resolve FDIOT_HOME from their own working directory: hand them an absolute one.
    os.environ["FDIOT_HOME"] = str(settings.home.resolve())
    reserve_measurement_core(settings)
    addresses = ensure_stack(settings)
    settings.ensure_admin_token()
    from server.prestart import upgrade_database

    upgrade_database()
    pid_file = settings.home / "up.pid"
    pid_file.write_text(str(os.getpid()))

    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    processes = FarmProcesses(settings=settings, env=dict(os.environ))
    try:
        try:
            for role in UP_ROLES:
                processes.start(role)
        except RuntimeError as failed:  # a taken port, a server that never became healthy
            err_console.print(f"[red]{escape(str(failed))}[/red]")
            raise typer.Exit(1) from failed
        token_file = settings.home / "admin_token"
        console.print(f"[green]farm ready[/green]: API at {settings.url}")
        console.print(f"  database  {addresses.database_url}")
        console.print(f"  redis     {addresses.redis_url}")
        where = token_file.resolve() if token_file.exists() else "FDIOT_ADMIN_TOKEN"
        console.print(f"  admin token in {where}")
        console.print(f"  logs in {(settings.home / 'logs').resolve()}")
        console.print("Ctrl-C stops the server and workers; `fdiot down` stops the database.")
        while not stopping:
            for role in UP_ROLES:
                proc = processes.procs.get(role)
                if stopping or proc is None or proc.poll() is None:
                    continue
                err_console.print(
                    f"[yellow]{role} exited with {proc.returncode}; restarting[/yellow] "
                    f"(log: {processes.log_path(role)})"
                )
                time.sleep(RESTART_PAUSE_S)
                processes.procs.pop(role, None)
                processes.start(role)
            time.sleep(0.5)
    finally:
        console.print("stopping the farm's processes")
        processes.stop_all()
        pid_file.unlink(missing_ok=True)


@app.command()
def down() -> None:
    """Stop a running `fdiot up` (if any) and the embedded PostgreSQL and Redis."""
    from fdiot.stack import stop_stack

    settings = get_settings()
    pid_file = settings.home / "up.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().strip())
        try:
            os.kill(pid, signal.SIGTERM)
            console.print(f"sent SIGTERM to fdiot up (pid {pid})")
            _wait_for_exit(pid, timeout_s=60.0)
        except ProcessLookupError:
            pass
        pid_file.unlink(missing_ok=True)
    stop_stack(settings)
    console.print("embedded PostgreSQL and Redis stopped")


def _wait_for_exit(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)


@app.command()
def agent() -> None:
    """Run the agent of this host: register the local CPU device and serve its benchmark queue."""
    from agent.daemon import run_agent

    settings = get_settings()
    with _farm_errors():
        code = run_agent(settings)
    raise typer.Exit(code)


# -- using the farm --------------------------------------------------------------------------
@app.command()
def devices(json_output: JsonOption = False) -> None:
    """List the farm's devices."""
    with _farm_errors(), _client() as client:
        rows = client.devices()
    if json_output:
        _print_json(rows)
        return
    table = Table("id", "name", "kind", "host", "execution config", "status", "last seen")
    for row in rows:
        config = row.get("execution_config") or {}
        table.add_row(
            str(row["id"]),
            str(row["name"]),
            str(row["kind"]),
            str(row.get("host", "")),
            ", ".join(f"{k}={v}" for k, v in config.items()),
            str(row.get("status", "")),
            str(row.get("last_seen_at") or "-"),
        )
    console.print(table)


@app.command()
def profile(
    device: DeviceOption,
    samples: Annotated[
        int | None,
        typer.Option(min=1, help="Op configurations to measure (default: settings' default)."),
    ] = None,
    op_types: Annotated[
        list[str] | None,
        typer.Option("--op-types", help="Op types, comma-separated or repeated (default: all)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Sampler seed.")] = None,
    minutes: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Device-time budget in minutes of measuring; the campaign stops when it is "
            "spent (default: the server's, 30; 0: no limit).",
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until it finishes.")] = False,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Start the device's samples over: fit its models on this campaign and later ones "
            "only (the device's speed changed: a busier or quieter host, an OS update). Without "
            "it, the samples add up.",
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Start a profiling campaign on a device (and optionally wait for it)."""
    settings = get_settings()
    count = samples if samples is not None else settings.default_campaign_samples
    with _farm_errors(), _client() as client:
        campaign = client.create_campaign(
            device,
            op_types=_split_op_types(op_types),
            samples=count,
            seed=seed,
            max_device_minutes=minutes,
            fresh=fresh,
        )
        if wait:
            campaign = _wait_campaign(client, campaign, quiet=json_output)
    if json_output:
        _print_json(campaign)
        return
    console.print(
        f"campaign {campaign['id']} on device {campaign['device_id']}: {campaign['status']}, "
        f"{campaign.get('samples_done', 0)}/{campaign['samples_requested']} samples"
        f"{_disturbed_note(campaign)}, "
        f"{campaign.get('jobs_done', 0)}/{campaign.get('jobs_total', '?')} jobs, "
        f"{_device_minutes(campaign)}"
    )
    if campaign.get("jobs_skipped"):
        err_console.print(f"[yellow]{escape(budget_note(campaign))}[/yellow]")
    if campaign.get("jobs_failed"):
        err_console.print(f"[yellow]{campaign['jobs_failed']} job(s) failed[/yellow]")
    warning = disturbed_warning(campaign)
    if warning:
        err_console.print(f"[yellow]{escape(warning)}[/yellow]")


def budget_note(campaign: dict[str, Any]) -> str:
    """What a campaign cut by its device-time budget left unmeasured, and what to do about it."""
    budget = campaign.get("max_device_minutes")
    return (
        f"{campaign.get('jobs_skipped')} job(s) skipped: the {budget:g}-minute device-time budget "
        f"was spent after {campaign.get('samples_done', 0)} of {campaign['samples_requested']} "
        "samples (a noisy host re-measures more and costs more per sample); the model is fitted "
        "on those. For more, profile again with a larger --minutes: samples add up per device."
    )


def _device_minutes(campaign: dict[str, Any]) -> str:
    """``12.3 of 30 device min`` (or ``12.3 device min`` without a budget)."""
    used = float(campaign.get("device_minutes") or 0.0)
    budget = campaign.get("max_device_minutes")
    return f"{used:.1f} of {budget:g} device min" if budget else f"{used:.1f} device min"


def _disturbed_note(campaign: dict[str, Any]) -> str:
    disturbed = int(campaign.get("samples_disturbed") or 0)
    return f" ({disturbed} disturbed, left out of the fit)" if disturbed else ""


def disturbed_warning(campaign: dict[str, Any]) -> str | None:
    """A line for a campaign with many samples measured on a disturbed host (None if few)."""
    done = int(campaign.get("samples_done") or 0)
    disturbed = int(campaign.get("samples_disturbed") or 0)
    if done == 0 or disturbed / done < NOISY_HOST_SHARE:
        return None
    return (
        f"{disturbed} of {done} samples ({disturbed / done:.0%}) stayed disturbed after every "
        "attempt (slow canary or shared core) and are left out of the fit: the host was noisy. "
        "The model is fitted on the rest; for a better one, profile again with --fresh when the "
        "host is quiet (a fresh campaign is not pooled with these samples)."
    )


def _wait_campaign(client: FarmClient, campaign: dict[str, Any], quiet: bool) -> dict[str, Any]:
    if quiet:
        return client.wait_campaign(campaign["id"], poll_s=POLL_S)
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[jobs]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(
            f"campaign {campaign['id']}", total=campaign["samples_requested"], jobs=""
        )

        def _update(state: dict[str, Any]) -> None:
            # The total grows when the campaign's adaptive round is planned.
            pending = state.get("adaptive_samples") and not state.get("adapted_at")
            jobs = (
                f"jobs {state.get('jobs_done', 0)}/{state.get('jobs_total', '?')}, "
                f"{_device_minutes(state)}"
            )
            progress.update(
                task,
                completed=state.get("samples_done", 0),
                total=state["samples_requested"] + (state["adaptive_samples"] if pending else 0),
                jobs=jobs + (" (+ adaptive round)" if pending else ""),
            )

        return client.wait_campaign(campaign["id"], callback=_update, poll_s=POLL_S)


@app.command()
def bench(
    model: Annotated[Path, typer.Argument(help="A .tflite file.")],
    device: DeviceOption,
    name: Annotated[str | None, typer.Option(help="Name to record (default: file name).")] = None,
    timeout_s: Annotated[
        float | None, typer.Option("--timeout", help="Give up waiting after this many seconds.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Measure a whole network on a device: upload, wait, print median/p10/p90 (ms)."""
    _check_model_file(model)
    with _farm_errors(), _client() as client:
        job = client.upload_benchmark(device, model, name=name)
        job = _wait_job(client, job, quiet=json_output, timeout_s=timeout_s)
    if job["status"] != "done":
        err_console.print(
            f"[red]benchmark job {job['id']} failed:[/red] {escape(str(job.get('error')))}"
        )
        raise typer.Exit(1)
    result = job.get("result") or {}
    # Accept the sample shape ({latency: {...}}) as well as a flat result.
    latency: dict[str, Any] = result.get("latency") or result
    summary = {
        "job_id": job["id"],
        "device_id": job["device_id"],
        "median_ms": latency.get("median_ms"),
        "p10_ms": latency.get("p10_ms"),
        "p90_ms": latency.get("p90_ms"),
        "std_ms": latency.get("std_ms"),
        "runs": latency.get("runs"),
        "model_sha256": result.get("model_sha256"),
    }
    if json_output:
        _print_json(summary)
        return
    console.print(
        f"{model.name} on device {job['device_id']}: median {summary['median_ms']:.3f} ms "
        f"(p10 {summary['p10_ms']:.3f}, p90 {summary['p90_ms']:.3f}, {summary['runs']} runs)"
    )


def _wait_job(
    client: FarmClient, job: dict[str, Any], quiet: bool, timeout_s: float | None
) -> dict[str, Any]:
    if quiet:
        return client.wait_job(job["id"], timeout_s=timeout_s, poll_s=POLL_S)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task(f"job {job['id']}: {job['status']}")

        def _update(state: dict[str, Any]) -> None:
            progress.update(task, description=f"job {state['id']}: {state['status']}")

        return client.wait_job(job["id"], timeout_s=timeout_s, poll_s=POLL_S, callback=_update)


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="A .tflite file.")],
    device: DeviceOption,
    json_output: JsonOption = False,
) -> None:
    """Predict a network's latency on a device from its current time model (per op, ms)."""
    _check_model_file(model)
    with _farm_errors(), _client() as client:
        answer = client.predict(device, model)
    if json_output:
        _print_json(answer)
        return
    table = Table("#", "op type", "config", "predicted ms", title=f"{model.name}")
    for op in answer["ops"]:
        config = ", ".join(f"{k}={v}" for k, v in (op.get("config") or {}).items())
        flag = " (fallback)" if op.get("fallback") else ""
        table.add_row(str(op["index"]), op["op_type"] + flag, config, f"{op['predicted_ms']:.4f}")
    console.print(table)
    console.print(
        f"total {answer['total_ms']:.3f} ms (incl. invoke overhead {answer['overhead_ms']:.3f} ms)"
        f", device {answer['device_id']} model v{answer['version']}"
    )
    console.print(trust_line(answer))


def trust_line(answer: Mapping[str, Any]) -> str:
    """How far to trust a prediction answer's total, in words (its error band and the model's
    network validation; see models.timemodel.ErrorBand)."""
    expected = answer.get("expected_error_pct")
    parts = [
        "expected error: no op type with a cross-validated error"
        if expected is None
        else f"expected error ±{expected:.1f}% (the op types' CV MAPE, weighted by their time)"
    ]
    if answer.get("unvalidated_ms"):
        parts.append(f"{answer['unvalidated_ms']:.3f} ms from op types without one")
    if answer.get("validation_mape_pct") is not None:
        parts.append(
            f"network validation MAPE {answer['validation_mape_pct']:.1f}% over "
            f"{answer.get('validation_networks', 0)} benchmark networks"
        )
        if answer.get("validation_within_band_pct") is not None:
            parts[-1] += f", {answer['validation_within_band_pct']:.0f}% of them within their band"
    return "; ".join(parts)


@app.command()
def models(
    device: DeviceOption,
    rules: Annotated[
        bool, typer.Option("--rules", help="Print the network-level terms and each op's rules.")
    ] = False,
    json_output: JsonOption = False,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            help="Write the whole model (trees and network terms) to this JSON file, as "
            "models.timemodel.DeviceTimeModel.from_dict reads it, and stop.",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Show a device's current time model: version, accuracy per op type, optionally its rules."""
    if export is not None:
        with _farm_errors(), _client() as client:
            exported = client.export_model(device)
        export.write_text(json.dumps(exported["model"], indent=1))
        typer.echo(
            f"wrote time model v{exported['version']} of device {exported['device_id']} to {export}"
        )
        return
    with _farm_errors(), _client() as client:
        current = client.current_model(device)
    if json_output:
        _print_json(current)
        return
    console.print(
        f"device {current['device_id']} time model v{current['version']}, trained "
        f"{current['trained_at']} on {current['sample_count']} samples, "
        f"invoke overhead {current.get('overhead_ms', 0.0):.4f} ms"
    )
    per_op = (current.get("metrics") or {}).get("per_op_type") or {}
    table = Table("op type", "samples", "CV MAPE")
    for op_type, metrics in sorted(per_op.items()):
        mape = metrics.get("cv_mape")
        table.add_row(
            op_type, str(metrics.get("samples", "")), "-" if mape is None else f"{mape:.1%}"
        )
    console.print(table)
    if rules:
        if current.get("network_rules"):
            console.rule("network")
            console.print(current["network_rules"], markup=False)
        for op_type, model_of_op in sorted((current.get("op_types") or {}).items()):
            console.rule(op_type)
            text = model_of_op.get("rules", "")
            console.print(
                text if isinstance(text, str) else "\n".join(map(str, text)), markup=False
            )


@app.command()
def fit(
    device: DeviceOption,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the new version.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Refit a device's time model from its stored samples now (e.g. after an upgrade)."""
    with _farm_errors(), _client() as client:
        answer = client.refit(device)
        if wait:
            answer = client.wait_model(device, newer_than=answer.get("current_version"))
    if json_output:
        _print_json(answer)
    elif wait:
        console.print(
            f"device {device}: time model v{answer['version']} fitted on "
            f"{answer['sample_count']} samples"
        )
    else:
        pending = "fit queued" if answer.get("requested") else "a fit is already pending"
        console.print(f"device {device}: {pending}; current version {answer['current_version']}")


@token_app.command("create")
def token_create(
    kind: Annotated[str, typer.Option(help="agent or client.")],
    name: Annotated[str, typer.Option(help="Who holds it (free text).")],
    json_output: JsonOption = False,
) -> None:
    """Create an API token (needs the admin token); the token is printed once."""
    if kind not in ("agent", "client"):
        err_console.print(f"[red]error:[/red] --kind must be agent or client, not {kind!r}")
        raise typer.Exit(2)
    with _farm_errors(), _client() as client:
        created = client.create_token(kind, name)
    if json_output:
        _print_json(created)
        return
    console.print(f"{created['kind']} token {created['id']} for {created['name']}:")
    typer.echo(created["token"])


def main() -> None:
    app()


if __name__ == "__main__":
    main()
