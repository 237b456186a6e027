"""API keys: roles, tokens, hashing and the per-key token bucket (pure: no I/O; the store is `keystore`).

A token is `tsk_<key id>_<43 url-safe chars>` (32 random bytes). The key id is public (it names the key in
`tradesys keys list` and in the access log); only a salted HMAC-SHA256 of the whole token is stored, so the
store's contents do not let anyone call the API. Verification is one HMAC and a constant-time comparison.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass

ROLES = ("read", "trade", "admin")  # each role may do what the ones before it may
ROLE_RANK = {r: i for i, r in enumerate(ROLES)}
TOKEN_PREFIX = "tsk"
BOOTSTRAP_KEY_ID = "env"  # the key from the environment variable: an admin key that cannot be revoked here
_TOKEN_RE = re.compile(r"^tsk_([0-9a-f]{12})_[A-Za-z0-9_-]{43}$")


def check_role(role: str, field: str = "role") -> str:
    """The role, or ValueError naming `field`."""
    if role not in ROLE_RANK:
        raise ValueError(f"{field}: must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def allows(have: str, need: str) -> bool:
    """Whether a key with role `have` may call a route that needs `need` (read < trade < admin)."""
    return ROLE_RANK[have] >= ROLE_RANK[need]


def new_token() -> tuple[str, str]:
    """A fresh (key id, token); the token is shown once and never stored."""
    key_id = secrets.token_hex(6)
    return key_id, f"{TOKEN_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(token: str) -> str | None:
    """The key id a well-formed token claims (not yet verified), or None."""
    m = _TOKEN_RE.match(token)
    return m.group(1) if m else None


def hash_token(token: str, salt_hex: str) -> str:
    return hmac.new(bytes.fromhex(salt_hex), token.encode(), hashlib.sha256).hexdigest()


def new_salt() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One stored key: never the token, only its salted hash."""

    key_id: str
    name: str
    role: str
    salt: str
    token_hash: str
    created_ns: int
    rate_per_s: float | None = None  # None: the server's default (serve.rate_limit_per_s)
    burst: int | None = None  # None: the server's default (serve.rate_limit_burst)
    revoked_ns: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_ns is None

    def matches(self, token: str) -> bool:
        """Constant-time check of `token` against the stored hash."""
        return hmac.compare_digest(hash_token(token, self.salt), self.token_hash)

    def public(self) -> dict[str, object]:
        """What `tradesys keys list` shows: no salt, no hash."""
        return {"key_id": self.key_id, "name": self.name, "role": self.role, "rate_per_s": self.rate_per_s,
                "burst": self.burst, "created_ns": self.created_ns, "revoked_ns": self.revoked_ns}


class TokenBucket:
    """`rate` requests per second on average, bursts of up to `burst`; `take` answers the wait before a retry."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate_limit: rate must be > 0 and burst >= 1, got {rate}, {burst}")
        self.rate, self.burst = float(rate), int(burst)
        self.tokens, self.last = float(burst), now

    def take(self, now: float) -> float:
        """0.0 if the request is admitted (a token is spent), else the seconds until one token is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def retry_after_header(wait_s: float) -> str:
    """Retry-After takes whole seconds: round up, at least 1."""
    return str(max(1, math.ceil(wait_s)))
