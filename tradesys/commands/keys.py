"""`tradesys keys create|list|revoke`: API keys with roles in the key store (`serve.keys_url`).

The running API re-reads the store every `serve.keys_refresh_s` seconds: a created key starts working, and a
revoked one stops, without a restart. The token is printed once, at creation; the store keeps only its salted hash.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer

app = typer.Typer(no_args_is_help=True, help="API keys for `tradesys serve`: create, list, revoke (roles read < "
                  "trade < admin).")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override: section.field=value")]


def _fail(kind: str, message: str) -> NoReturn:
    from tradesys.commands.output import error_line

    typer.echo(error_line(kind, message), err=True)
    raise typer.Exit(2)


def _store(config: Path | None, set_: list[str] | None):  # type: ignore[no-untyped-def]
    from tradesys.config import ConfigError, load_config
    from tradesys.serve.keystore import KeyStore

    try:
        url = load_config(config, set_ or []).serve.keys_url
    except ConfigError as exc:
        _fail("config", str(exc))
    try:
        return KeyStore(url)
    except Exception as exc:  # an unreachable database: one line naming the setting, never the password
        from tradesys.ledger.sql import redact_url

        _fail("config", f"serve.keys_url: cannot open {redact_url(url)!r} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200] if str(exc) else ''})")


def _when(ns: int | None) -> str:
    return "" if ns is None else datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@app.command("create")
def create(
    role: Annotated[str, typer.Option("--role", help="read, trade or admin")],
    name: Annotated[str, typer.Option("--name", help="a label for people (default: the key id)")] = "",
    rate_limit: Annotated[float | None, typer.Option("--rate-limit", help="requests/s for this key (default: "
                                                     "serve.rate_limit_per_s)")] = None,
    burst: Annotated[int | None, typer.Option("--burst", help="burst for this key (default: "
                                              "serve.rate_limit_burst)")] = None,
    json_: Annotated[bool, typer.Option("--json", help="print the key as JSON")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Create a key and print its token once (it cannot be shown again)."""
    store = _store(config, set_)
    try:
        rec, token = store.create(role, name, rate_limit, burst)
    except ValueError as exc:
        _fail("usage", f"--{str(exc).replace('rate_limit', 'rate-limit')}")
    finally:
        store.close()
    if json_:
        typer.echo(json.dumps({**rec.public(), "token": token}))
        return
    typer.echo(f"key {rec.key_id} ({rec.name}), role {rec.role}")
    typer.echo(f"token: {token}")
    typer.echo("Send it in the X-API-Key header. It is shown only now: the store keeps a salted hash.")


@app.command("list")
def list_keys(
    json_: Annotated[bool, typer.Option("--json", help="print the keys as JSON")] = False,
    all_: Annotated[bool, typer.Option("--all", help="include revoked keys")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """The keys: id, name, role, rate limit, created, revoked. Never a token or a hash."""
    store = _store(config, set_)
    try:
        keys = [k for k in store.list_keys() if all_ or k.active]
    finally:
        store.close()
    if json_:
        typer.echo(json.dumps([k.public() for k in keys]))
        return
    if not keys:
        typer.echo("no keys (create one: tradesys keys create --role read)")
        return
    typer.echo(f"{'key id':<14}{'name':<20}{'role':<7}{'rate/s':>8}{'burst':>7}  {'created':<21}{'revoked'}")
    for k in keys:
        rate = "" if k.rate_per_s is None else f"{k.rate_per_s:g}"
        burst = "" if k.burst is None else str(k.burst)
        typer.echo(f"{k.key_id:<14}{k.name[:19]:<20}{k.role:<7}{rate:>8}{burst:>7}  {_when(k.created_ns):<21}"
                   f"{_when(k.revoked_ns)}")


@app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="the key id (tradesys keys list)")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Revoke a key: the running API refuses it within serve.keys_refresh_s."""
    store = _store(config, set_)
    try:
        done = store.revoke(key_id)
    finally:
        store.close()
    if not done:
        _fail("usage", f"KEY_ID: no active key {key_id!r} (see tradesys keys list --all)")
    typer.echo(f"revoked {key_id}")
