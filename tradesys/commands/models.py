"""`tradesys models ...`: the forecaster registry (MLflow) from the command line: list, show, promote, rollback,
export, serve.

Why a CLI over the registry: promotion normally happens in the training job (a Diebold-Mariano test), but an
operator must be able to see what is served, override the decision with a recorded reason, undo it, and serve the
champion/challenger pair, without opening the MLflow UI or writing Python.

Every command takes ``--registry-name`` (default ``tradesys-forecaster``, the training job's), ``--mlflow-uri`` and
``--runs-dir``: the store is ``--mlflow-uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<runs-dir>/mlflow.db``,
as in `tradesys.train.tracking.resolve_tracking_uri`; a missing SQLite file is an error here, not a new empty store.
Bad input (unknown name, version or alias, a version without exports, no API key) is one red line on stderr naming
the argument, exit code 2; ``--json`` output goes to stdout alone.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(no_args_is_help=True, help="Model registry: list, show, promote, rollback, export, serve.")
console = Console()
err_console = Console(stderr=True)

DEFAULT_REGISTRY_NAME = "tradesys-forecaster"

Name = Annotated[str, typer.Option("--registry-name", help="registered model name")]
MlflowUri = Annotated[
    str | None, typer.Option("--mlflow-uri", help="tracking/registry URI (default: $MLFLOW_TRACKING_URI, else "
                             "sqlite:///<runs-dir>/mlflow.db)"),
]  # fmt: skip
RunsDir = Annotated[Path, typer.Option("--runs-dir", help="the training job's --runs-dir (holds mlflow.db)")]
Json = Annotated[bool, typer.Option("--json", help="print the result as JSON")]

# library field -> this command line's argument, so an error names what the user typed
_ARGS = {"name": "--registry-name", "reason": "--reason", "dest_dir": "--dest", "tracking_uri": "--mlflow-uri",
         "runs_dir": "--runs-dir", "canary_percent": "--canary-percent/--shadow",
         "ray.head_resource": "--head-resource"}  # fmt: skip


def _one_line(exc: BaseException, fields: dict[str, str]) -> str:
    lines = str(exc).strip().splitlines()
    msg = lines[0] if lines else type(exc).__name__
    head, sep, rest = msg.partition(":")
    if sep and head in fields:
        msg = f"{fields[head]}:{rest}"
    return msg


@contextmanager
def _errors(**fields: str) -> Iterator[None]:
    """Library errors ('field: reason') and MLflow errors become one red line naming the argument, exit code 2."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (ValueError, LookupError, RuntimeError, OSError, MlflowException) as exc:
        err_console.print(f"[red]error:[/red] {_one_line(exc, {**_ARGS, **fields})}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _uri(mlflow_uri: str | None, runs_dir: Path) -> str:
    """The store URI; without --mlflow-uri and $MLFLOW_TRACKING_URI the SQLite file under --runs-dir must exist."""
    from tradesys.train.tracking import resolve_tracking_uri

    if mlflow_uri is None and not os.environ.get("MLFLOW_TRACKING_URI", "").strip():
        db = runs_dir.expanduser().resolve() / "mlflow.db"
        if not db.is_file():
            raise ValueError(f"runs_dir: no MLflow store at {db} (train first, or pass --mlflow-uri / --runs-dir)")
    return resolve_tracking_uri(mlflow_uri, runs_dir=runs_dir)


def _emit_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _fmt(x: Any) -> str:
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


@app.command("list")
def list_(
    registry_name: Name = DEFAULT_REGISTRY_NAME,
    mlflow_uri: MlflowUri = None,
    runs_dir: RunsDir = Path("runs"),
    as_json: Json = False,
) -> None:
    """Every version: aliases, creation time, run, holdout metrics and the promotion decision."""
    from tradesys.train.registry import list_models

    with _errors():
        rows = list_models(registry_name, tracking_uri=_uri(mlflow_uri, runs_dir))
    if as_json:
        _emit_json([r.to_dict() for r in rows])
        return
    metrics = sorted({k for r in rows for k in r.holdout})
    t = Table(title=f"{registry_name}: {len(rows)} version(s)")
    for col in ("version", "aliases", "created (UTC)", "run", *(f"holdout {m}" for m in metrics), "decision"):
        t.add_column(col, justify="right" if col.startswith(("version", "holdout")) else "left")
    for r in rows:
        decision = r.promotion.get("decision", "")
        if r.promotion.get("reason"):
            decision += f" ({r.promotion['reason']})"
        t.add_row(str(r.version), ", ".join(r.aliases), r.created.replace("+00:00", ""), (r.run_id or "")[:12],
                  *(_fmt(r.holdout[m]) if m in r.holdout else "" for m in metrics), decision)  # fmt: skip
    console.print(t)


@app.command()
def show(
    version: Annotated[str, typer.Argument(help="a version number or an alias (champion, challenger)")],
    registry_name: Name = DEFAULT_REGISTRY_NAME,
    mlflow_uri: MlflowUri = None,
    runs_dir: RunsDir = Path("runs"),
    as_json: Json = False,
) -> None:
    """One version in full: aliases, run, parameters, holdout metrics, promotion decision, artifacts."""
    from tradesys.train.registry import describe_version

    with _errors(version="VERSION"):
        d = describe_version(registry_name, version, tracking_uri=_uri(mlflow_uri, runs_dir))
    if as_json:
        _emit_json(d)
        return
    t = Table(title=f"{registry_name} version {d['version']}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    rows: list[tuple[str, Any]] = [("aliases", ", ".join(d["aliases"]) or "-"), ("created (UTC)", d["created"]),
                                   ("status", d["status"]), ("run", f"{d['run_id']} ({d['run_name']})"),
                                   ("source", d["source"])]  # fmt: skip
    rows += [(f"holdout {k}", _fmt(v)) for k, v in d["holdout"].items()]
    rows += [(f"promotion.{k}", v) for k, v in d["promotion"].items()]
    rows += [(f"promotion_{k}", _fmt(v)) for k, v in d["promotion_stats"].items()]
    rows += [(f"param {k}", v) for k, v in d["params"].items()]
    rows += [(f"artifact {a['path']}", f"{a['bytes']:,} bytes") for a in d["artifacts"]]
    for k, v in rows:
        t.add_row(k, str(v))
    console.print(t)


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="the version (number or alias) to make champion")],
    reason: Annotated[str, typer.Option("--reason", help="why (recorded on the version and its run)")],
    registry_name: Name = DEFAULT_REGISTRY_NAME,
    mlflow_uri: MlflowUri = None,
    runs_dir: RunsDir = Path("runs"),
    as_json: Json = False,
) -> None:
    """Make VERSION the champion by hand (no test); `rollback` undoes it."""
    from tradesys.train.registry import champion_history, resolve_version, set_champion

    with _errors(version="VERSION"):
        uri = _uri(mlflow_uri, runs_dir)
        v = resolve_version(registry_name, version, tracking_uri=uri)
        previous = set_champion(registry_name, v, reason, tracking_uri=uri)
        history = champion_history(registry_name, tracking_uri=uri)
    out = {"name": registry_name, "champion": v, "previous_champion": previous, "history": history,
           "reason": reason.strip()}  # fmt: skip
    if as_json:
        _emit_json(out)
        return
    console.print(f"{registry_name}: champion {previous if previous is not None else '-'} -> [bold]{v}[/bold] "
                  f"(manual: {reason.strip()}); history {history}", highlight=False)  # fmt: skip


@app.command()
def rollback(
    registry_name: Name = DEFAULT_REGISTRY_NAME,
    mlflow_uri: MlflowUri = None,
    runs_dir: RunsDir = Path("runs"),
    as_json: Json = False,
) -> None:
    """Point champion back at the previous holder (the champion history recorded by promotions)."""
    from tradesys.train.registry import CHAMPION, alias_version, champion_history
    from tradesys.train.registry import rollback as do_rollback

    with _errors():
        uri = _uri(mlflow_uri, runs_dir)
        champion_history(registry_name, tracking_uri=uri)  # unknown name -> error naming --registry-name
        current = alias_version(registry_name, CHAMPION, tracking_uri=uri)
        prev = do_rollback(registry_name, tracking_uri=uri)
        history = champion_history(registry_name, tracking_uri=uri)
    out = {"name": registry_name, "champion": prev, "rolled_back_from": current, "history": history}
    if as_json:
        _emit_json(out)
        return
    console.print(f"{registry_name}: champion {current} -> [bold]{prev}[/bold] (rolled back); history {history}",
                  highlight=False)  # fmt: skip


def _served_versions(name: str, uri: str) -> tuple[int, int | None]:
    """(champion, challenger or None when unset or the same version)."""
    from tradesys.train.registry import CHALLENGER, CHAMPION, alias_version, champion_history

    champion_history(name, tracking_uri=uri)  # unknown name -> error naming --registry-name
    champ = alias_version(name, CHAMPION, tracking_uri=uri)
    if champ is None:
        raise ValueError(f"name: {name!r} has no champion (train, or `tradesys models promote VERSION`)")
    chall = alias_version(name, CHALLENGER, tracking_uri=uri)
    return champ, None if chall == champ else chall


@contextmanager
def _env(var: str, value: str) -> Iterator[None]:
    old = os.environ.get(var)
    os.environ[var] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = old


def _export_with_progress(name: str, dest: Path, versions: list[str] | list[int], uri: str) -> dict[int, list[Path]]:
    """`export_versions` with a rich progress bar (bytes) on stderr; everything is checked before the bar starts."""
    from tradesys.train.registry import export_versions, plan_export

    plan = plan_export(name, versions, tracking_uri=uri)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn())
    with _env("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"), \
            Progress(*columns, console=err_console, transient=False) as bar:  # one bar: ours, not one per file
        task = bar.add_task(f"export {len({f.version for f in plan})} version(s)",
                            total=sum(f.size or 0 for f in plan) or None)  # fmt: skip

        def advance(f: Any, _path: Path) -> None:
            bar.update(task, advance=f.size or 0, description=f"v{f.version} {f.filename}")

        return export_versions(name, dest, [f.version for f in plan], tracking_uri=uri, on_file=advance)


@app.command()
def export(
    dest: Annotated[Path, typer.Option("--dest", help="folder to write <version>/model.onnx, model.pt into")],
    versions: Annotated[list[str] | None, typer.Option("--versions", help="versions or aliases, comma-separated "
                                                       "or repeated (default: champion and challenger)")] = None,
    registry_name: Name = DEFAULT_REGISTRY_NAME,
    mlflow_uri: MlflowUri = None,
    runs_dir: RunsDir = Path("runs"),
    as_json: Json = False,
) -> None:
    """Download versions' ONNX/TorchScript exports (and standardizer.json) into DEST/<version>/, the layout the
    /v1/predict server reads."""
    with _errors(version="--versions", versions="--versions"):
        uri = _uri(mlflow_uri, runs_dir)
        refs: list[Any] = _split(versions)
        if not refs:
            champ, chall = _served_versions(registry_name, uri)
            refs = [champ] if chall is None else [champ, chall]
        written = _export_with_progress(registry_name, dest, refs, uri)
    out = {str(v): [str(p) for p in paths] for v, paths in written.items()}
    if as_json:
        _emit_json({"dest": str(dest), "versions": out})
        return
    for v, paths in out.items():
        console.print(f"version {v}: {', '.join(Path(p).name for p in paths)} -> {dest / v}", highlight=False)


@app.command("serve")
def serve_cmd(
    canary_percent: Annotated[float, typer.Option("--canary-percent", help="share of requests (0-100) answered by "
                                                  "the challenger")] = 0.0,
    shadow: Annotated[bool, typer.Option("--shadow", help="the challenger scores a copy of every request, "
                                         "never answers")] = False,
    http_port: Annotated[int, typer.Option("--http-port", min=1, max=65535)] = 8000,
    grpc_port: Annotated[int, typer.Option("--grpc-port", min=0, max=65535, help="also serve Predict over gRPC "
                                           "on this port (tradesys.serve.grpc_predict; key in x-api-key metadata); "
                                           "0: off")] = 0,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    dest: Annotated[Path | None, typer.Option("--dest", help="model folder (default: a temporary one, removed on "
                                              "exit); must be readable by the Serve replicas")] = None,
    backend: Annotated[str, typer.Option(help="inference backend: auto, onnxruntime, torchscript, ...")] = "auto",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="export and check, print the plan, do not serve")] = False,
    head_resource: Annotated[str, typer.Option("--head-resource", help="custom resource only the head has (the "
                                               "config's ray.head_resource): every replica asks for a sliver of "
                                               "it, so it runs on the head; \"\" places them anywhere")] = "head",
    registry_name: Name = DEFAULT_REGISTRY_NAME,
    mlflow_uri: MlflowUri = None,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Export the champion and challenger and serve them on POST /v1/predict (canary or shadow) until Ctrl-C.
    Needs TRADESYS_API_KEY set. The replicas run on the head (--head-resource), like the API's: a cluster where no
    node has the resource is refused before anything is deployed; without RAY_ADDRESS a local head declaring it is
    started."""
    from tradesys.serve.auth import API_KEY_ENV

    if not os.environ.get(API_KEY_ENV, "").strip():
        err_console.print(f"[red]error:[/red] {API_KEY_ENV} is not set: the predict API refuses to start without a "
                          "key", highlight=False)  # fmt: skip
        raise typer.Exit(2)
    with _errors():
        if head_resource and not all(c.isalnum() or c in "_.-" for c in head_resource):
            raise ValueError(f"ray.head_resource: {head_resource!r} is not a resource name (letters, digits, _ . -)")
        uri = _uri(mlflow_uri, runs_dir)
        champ, chall = _served_versions(registry_name, uri)
        if chall is None and (canary_percent > 0 or shadow):
            raise ValueError(f"canary_percent: {registry_name!r} has no challenger distinct from the champion "
                             f"({champ}) to send canary or shadow traffic to")  # fmt: skip
        if not dry_run:  # refused here, before anything is exported or deployed, on a cluster without it
            _ray_with_head(head_resource, console.print)
    with _model_dir(dest) as model_dir, _errors():
        _export_with_progress(registry_name, model_dir, [champ] if chall is None else [champ, chall], uri)
        plan = {"name": registry_name, "model_dir": str(model_dir.resolve()), "champion": str(champ),
                "challenger": None if chall is None else str(chall), "canary_percent": canary_percent,
                "shadow": shadow, "host": host, "http_port": http_port, "backend": backend,
                "head_resource": head_resource}  # fmt: skip
        plan["grpc_port"] = grpc_port
        app_ = _build_app(plan)
        if dry_run:
            _emit_json(plan)
            return
        _run_blocking(app_, host, http_port, console.print, grpc_port=grpc_port)


@contextmanager
def _model_dir(dest: Path | None) -> Iterator[Path]:
    if dest is not None:
        yield dest
        return
    with tempfile.TemporaryDirectory(prefix="tradesys-models-") as d:
        yield Path(d)


def _build_app(plan: dict[str, Any]) -> Any:
    """The Serve application for `plan` (checks the versions on disk and the key, in the driver), every replica
    pinned to the head by ``plan["head_resource"]`` (`tradesys.serve.deploy.pin_to_head`)."""
    from tradesys.serve.deploy import pin_to_head
    from tradesys.serve.predict import build_predict_app

    app_ = build_predict_app(plan["model_dir"], champion=plan["champion"], challenger=plan["challenger"],
                             canary_percent=plan["canary_percent"], shadow=plan["shadow"], backend=plan["backend"],
                             model_name=plan["name"])  # fmt: skip
    return pin_to_head(app_, plan.get("head_resource", ""))


def _ray_with_head(resource: str, say: Callable[..., None]) -> None:
    """Join Ray (the one this process holds, else $RAY_ADDRESS, else a local head that declares `resource`) and
    refuse a cluster where no node has `resource` (ConfigError naming ray.head_resource): a pinned replica would
    wait forever."""
    import ray

    from tradesys.placement import check_head_resource, local_head_resources

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=False)
        else:
            from tradesys.localray import init_local

            init_local(None, True, lambda m: say(m, highlight=False), local_head_resources(resource))
    check_head_resource(resource, ray.cluster_resources())


def _run_blocking(application: Any, host: str, port: int, say: Callable[..., None], grpc_port: int = 0) -> None:
    """Start Serve's proxy on host:port (joins RAY_ADDRESS if set, else a local Ray), deploy, wait for Ctrl-C.
    ``grpc_port``: the proxy also serves `tradesys.serve.grpc_predict`'s Predict there (0: no gRPC)."""
    from ray import serve

    grpc_options = None
    if grpc_port:
        from ray.serve.config import gRPCOptions

        from tradesys.serve.grpc_predict import GRPC_SERVICER_FUNCTION

        grpc_options = gRPCOptions(port=grpc_port, grpc_servicer_functions=[GRPC_SERVICER_FUNCTION])
    serve.start(http_options={"host": host, "port": port}, grpc_options=grpc_options)
    serve.run(application, name="tradesys-predict", route_prefix="/")
    say(f"Serving POST http://{host}:{port}/v1/predict (status at /v1/predict/status); Ctrl-C to stop")
    if grpc_port:
        say(f"Serving gRPC tradesys.predict.v1.PredictService/Predict on port {grpc_port}, key in x-api-key "
            "metadata (Serve's gRPC proxy listens on all interfaces, whatever --host)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.delete("tradesys-predict")
