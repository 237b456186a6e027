"""TLS for the HTTP API: Ray Serve's proxy terminates it (HTTPOptions `ssl_certfile`/`ssl_keyfile`, 2.60).

The pair is checked here, in the driver, before Ray or Serve start: both or neither, each a readable file, and the
certificate and key load together (`ssl.SSLContext.load_cert_chain`), so a wrong path is one config line naming the
setting rather than a proxy that never comes up. On a multi-node cluster every node runs a proxy: the paths must
exist on each node.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from tradesys.config import ConfigError


def check_tls(certfile: str | None, keyfile: str | None) -> tuple[str, str] | None:
    """The absolute (cert, key) paths, None for plain HTTP, or ConfigError naming `serve.tls_certfile`/`_keyfile`."""
    if certfile is None and keyfile is None:
        return None
    if certfile is None or keyfile is None:
        missing = "serve.tls_certfile" if certfile is None else "serve.tls_keyfile"
        raise ConfigError(f"{missing}: required with the other TLS setting (set both, or neither for plain HTTP)")
    paths = []
    for field, path in (("serve.tls_certfile", certfile), ("serve.tls_keyfile", keyfile)):
        if not os.path.isfile(path):
            raise ConfigError(f"{field}: {path!r} is not a file")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"{field}: {path!r} is not readable by this user")
        paths.append(os.path.abspath(path))
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(paths[0], paths[1])
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"serve.tls_certfile: {certfile!r} and serve.tls_keyfile {keyfile!r} do not load as a "
                          f"PEM certificate and its private key ({getattr(exc, 'reason', None) or exc})") from None
    return paths[0], paths[1]


def http_options(host: str, port: int, certfile: str | None, keyfile: str | None) -> dict[str, Any]:
    """`serve.start(http_options=...)` for host:port, with TLS when both paths are given."""
    opts: dict[str, Any] = {"host": host, "port": port}
    pair = check_tls(certfile, keyfile)
    if pair is not None:
        opts["ssl_certfile"], opts["ssl_keyfile"] = pair
    return opts
