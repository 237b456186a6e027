"""`tradesys paper-server`: the local Alpaca-compatible paper-trading server (tradesys.broker.alpaca_paper) for demos.

It replays the configured data source (`data.*`: source, symbols, start, end) through SimBroker with the configured
fees and slippage (`broker.*`) and the configured starting cash (`initial_cash`). Keys come from the environment
only: the server accepts the pair in APCA_API_KEY_ID / APCA_API_SECRET_KEY, the same variables the clients read.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Annotated

import typer


def paper_server(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="override: section.field=value")] = None,
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port (0: any free port, printed)")] = 8765,
    bars_per_second: Annotated[
        float, typer.Option("--bars-per-second", min=0.0, help="replay pace; 0: only POST /admin/step advances")
    ] = 1.0,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait",
                           help="a paced replay starts once a trader is connected (bar stream subscribed, trade "
                                "updates listening)")
    ] = True,
) -> None:
    """Serve Alpaca's trading REST, trade-updates stream, bars REST and bar stream over a replayed data source.

    Not Alpaca's API: POST /admin/step {"n": k} replays k bars; GET/POST /admin/faults reads/sets the fault plan
    (drop_ack, duplicate_fill, partial_fill_on_cancel, rate_limit, stream_outage_steps). Ctrl-C stops."""
    from tradesys.broker.alpaca_paper import PaperServer
    from tradesys.cli import _config, _fail, console
    from tradesys.data import make_source
    from tradesys.data.alpaca import KEY_ENV, SECRET_ENV

    key, secret = os.environ.get(KEY_ENV, ""), os.environ.get(SECRET_ENV, "")
    for name, value in ((KEY_ENV, key), (SECRET_ENV, secret)):
        if not value:
            _fail("config", f"{name}: not set in the environment (the paper server accepts that key pair)")
    cfg = _config(config, set_, check_data=False)
    if cfg.data.source == "alpaca":
        _fail("config", "data.source: the paper server replays stored data (sp500_stocks, us_indices, synthetic), "
                        "not alpaca")
    cfg = _config(config, set_)  # now with the data checks (symbols, window), which build the source
    try:
        server = PaperServer(make_source(cfg.data), key=key, secret=secret, broker=cfg.broker,
                             initial_cash=cfg.initial_cash, bars_per_second=bars_per_second, host=host, port=port,
                             wait_for_clients=wait)
        url = server.start()
    except (OSError, RuntimeError, ValueError) as exc:
        _fail("run", f"paper server: {exc}")
    console.print(f"Alpaca paper server on {url} (trading REST, data REST), trade updates at {server.stream_url}, "
                  f"bars at {server.data_stream_url}; {len(server.venue.source)} steps of {cfg.data.source}, "
                  f"{bars_per_second:g} bars/s{' once a trader connects' if wait and bars_per_second else ''}; "
                  f"Ctrl-C to stop", highlight=False, soft_wrap=True)
    # a server started with `&` from a script ignores SIGINT: SIGTERM (plain `kill`) stops it cleanly too
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
