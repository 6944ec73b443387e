"""Who may use the collector's web server: accounts, tokens, roles, login sessions.

The users file (TOML, mode 0600: it holds password and token hashes) lists operator accounts
and API tokens::

    [[user]]
    name = "alice"
    role = "operator"            # or "read-only"
    password = "scrypt$16384$8$1$<salt>$<hash>"   # python -m collector.web.auth hash

    [[token]]
    name = "grafana"
    role = "read-only"
    sha256 = "<hex sha256 of the token>"          # python -m collector.web.auth token

The API takes ``Authorization: Bearer <token>`` or ``Authorization: Basic`` (an account);
the dashboard logs in with a form and then carries a signed cookie. Roles: ``read-only`` may
GET; ``operator`` may also change things (POST, PUT, PATCH, DELETE). Only hashes are kept:
a leaked users file gives no password or token, and no secret ever reaches a log or repr.

Why hand-written and not a library: aiohttp-session / aiohttp-security would add two
dependencies for one HMAC-signed cookie and a role check; hashing is the stdlib's scrypt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from collector.errors import ConfigError
from collector.tomlfile import load_toml

__all__ = [
    "OPERATOR",
    "READ_ONLY",
    "ROLES",
    "Auth",
    "Principal",
    "hash_password",
    "load_auth",
    "new_token",
]

READ_ONLY = "read-only"
OPERATOR = "operator"
ROLES = (READ_ONLY, OPERATOR)
_RANK = {READ_ONLY: 0, OPERATOR: 1}

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
COOKIE = "meterlink_session"


@dataclass(frozen=True)
class Principal:
    """Who made a request: an account or a token, and its role."""

    name: str
    role: str
    via: str  # "password" | "token" | "session"

    def may(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]


@dataclass(frozen=True)
class _User:
    name: str
    role: str
    password: str = field(repr=False)  # the scrypt hash string


@dataclass(frozen=True)
class _Token:
    name: str
    role: str
    sha256: bytes = field(repr=False)


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64) for the users file."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def _check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        want = base64.b64decode(digest, validate=True)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
        )
    except (ValueError, binascii.Error):
        return False
    return kind == "scrypt" and hmac.compare_digest(got, want)


def new_token() -> tuple[str, str]:
    """A fresh API token and the sha256 hex that goes in the users file."""
    token = "mlk_" + secrets.token_urlsafe(32)
    return token, hashlib.sha256(token.encode()).hexdigest()


class Auth:
    """The accounts and tokens of one users file, and the session cookie's signing key.

    The signing key is random per collector start unless given: a restart logs the dashboard
    users out (API tokens are unaffected)."""

    def __init__(
        self,
        users: list[_User],
        tokens: list[_Token],
        session_s: int = 12 * 3600,
        key: bytes | None = None,
    ) -> None:
        self._users = {u.name: u for u in users}
        self._tokens = {t.sha256: t for t in tokens}
        self.session_s = session_s
        self._key = key if key is not None else os.urandom(32)
        # scrypt is slow on purpose; Basic auth on every API call would pay it each time,
        # so a verified (user, password) pair is remembered by its HMAC, never in clear
        self._verified: dict[bytes, Principal] = {}

    def __repr__(self) -> str:
        return f"Auth({len(self._users)} users, {len(self._tokens)} tokens)"

    @property
    def user_names(self) -> list[str]:
        return sorted(self._users)

    def login(self, name: str, password: str) -> Principal | None:
        user = self._users.get(name)
        mark = hmac.new(self._key, f"{name}\0{password}".encode(), "sha256").digest()
        known = self._verified.get(mark)
        if known is not None:
            return known
        if user is None:
            _check_password(password, hash_password("x", b"0" * 16))  # same time either way
            return None
        if not _check_password(password, user.password):
            return None
        principal = Principal(user.name, user.role, "password")
        if len(self._verified) < 1024:
            self._verified[mark] = principal
        return principal

    def token(self, token: str) -> Principal | None:
        found = self._tokens.get(hashlib.sha256(token.encode()).digest())
        return None if found is None else Principal(found.name, found.role, "token")

    def authorization(self, header: str) -> Principal | None:
        """The principal of an ``Authorization`` header (Bearer token or Basic account)."""
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            return self.token(value.strip())
        if scheme == "basic":
            try:
                name, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, binascii.Error, UnicodeDecodeError):
                return None
            return self.login(name, password)
        return None

    # sessions ---------------------------------------------------------------------------

    def session_cookie(self, principal: Principal, now_s: float | None = None) -> str:
        now_s = time.time() if now_s is None else now_s
        body = json.dumps(
            {"u": principal.name, "r": principal.role, "e": int(now_s + self.session_s)},
            separators=(",", ":"),
        ).encode()
        payload = base64.urlsafe_b64encode(body).decode().rstrip("=")
        return f"{payload}.{self._sign(payload)}"

    def session(self, cookie: str, now_s: float | None = None) -> Principal | None:
        payload, _, signature = cookie.partition(".")
        if not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            name, role, expires = doc["u"], doc["r"], int(doc["e"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        now_s = time.time() if now_s is None else now_s
        user = self._users.get(name)
        # an account removed or demoted in the users file loses its sessions at the next start
        if expires < now_s or user is None or user.role != role:
            return None
        return Principal(name, role, "session")

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self._key, payload.encode(), "sha256").digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def load_auth(path: Path, session_hours: int = 12) -> Auth:
    """Read the users file; refuse one that others may read or that names no one."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"{path}: users file not found") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{path}: users file is mode {stat.S_IMODE(mode):04o}; it holds password and token"
            f" hashes, make it 0600 (chmod 600 {path})"
        )
    root = load_toml(path, "users file")
    root.check_keys({"user", "token"})
    users: list[_User] = []
    for sec in root.tables("user"):
        sec.check_keys({"name", "role", "password"})
        role = sec.str("role")
        if role not in ROLES:
            raise sec.error("role", f"must be one of {', '.join(ROLES)}, got {role!r}")
        stored = sec.str("password")
        if not stored.startswith("scrypt$") or stored.count("$") != 5:
            raise sec.error("password", "must be a hash from 'python -m collector.web.auth hash'")
        name = sec.str("name")
        if any(u.name == name for u in users):
            raise sec.error("name", f"user {name!r} is listed twice")
        users.append(_User(name, role, stored))
    tokens: list[_Token] = []
    for sec in root.tables("token"):
        sec.check_keys({"name", "role", "sha256"})
        role = sec.str("role")
        if role not in ROLES:
            raise sec.error("role", f"must be one of {', '.join(ROLES)}, got {role!r}")
        try:
            digest = bytes.fromhex(sec.str("sha256"))
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise sec.error("sha256", "must be 64 hex digits (python -m collector.web.auth token)")
        tokens.append(_Token(sec.str("name"), role, digest))
    if not users and not tokens:
        raise ConfigError(f"{path}: users file lists no [[user]] and no [[token]]")
    return Auth(users, tokens, session_s=session_hours * 3600)


def main(argv: list[str] | None = None) -> int:
    """``python -m collector.web.auth hash`` (password from stdin) | ``token``."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["hash"]:
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            print("give the password on stdin", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    if args == ["token"]:
        token, digest = new_token()
        print(f"token:  {token}\nsha256: {digest}")
        return 0
    print("usage: python -m collector.web.auth hash|token", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
