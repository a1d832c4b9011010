"""Central admin accounts: named people with a role, a password hash and a TOTP second factor.

Roles, from least to most: viewer (the box registry), investigator (searches, exports and cases,
each search or export under a case reference), admin (everything, plus accounts and the audit log).
Passwords are hashed with werkzeug's scrypt; TOTP (RFC 6238, 30 s, 6 digits) comes from pyotp and a
code is accepted once. Repeated failed logins for a name or from an address are slowed: after
FREE_FAILURES failures in the window every further attempt must wait, doubling up to MAX_WAIT_S.
Sessions live server-side (only a hash of the cookie's token is stored), so disabling an account or
logging out ends its sessions at once.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
from dataclasses import dataclass

import pyotp
from werkzeug.security import check_password_hash, generate_password_hash

from central.audit import tx

ROLES = ("viewer", "investigator", "admin")
NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{2,64}$")
MIN_PASSWORD = 12
FREE_FAILURES = 3          # failures allowed in the window before attempts are slowed
FAILURE_WINDOW_MS = 15 * 60 * 1000
MAX_WAIT_S = 300
ISSUER = "Skillspot centre"

# Compared against when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = generate_password_hash(secrets.token_hex(16))


class AccountError(ValueError):
    """A request about accounts that cannot be done; the message says why and how to fix it."""


@dataclass(frozen=True)
class Account:
    """One admin account as the pages see it (no secrets)."""

    id: int
    name: str
    role: str
    disabled: bool
    created_ms: int
    created_by: str

    def can(self, need: str) -> bool:
        """True when this account's role is `need` or above."""
        return not self.disabled and ROLES.index(self.role) >= ROLES.index(need)


@dataclass(frozen=True)
class NewAccount:
    """What the creator must hand to the new admin once: the TOTP secret and its otpauth URI."""

    account: Account
    totp_secret: str
    totp_uri: str


def _row(r: sqlite3.Row | tuple) -> Account:
    return Account(id=r[0], name=r[1], role=r[2], disabled=bool(r[3]), created_ms=r[4], created_by=r[5])


_COLS = "id, name, role, disabled, created_ms, created_by"


def check_role(role: str) -> str:
    """The role if it is one of ROLES, else AccountError naming the choices."""
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> None:
    """Refuse a password too short to stand up to guessing."""
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password must have at least {MIN_PASSWORD} characters")


def create(conn: sqlite3.Connection, name: str, role: str, password: str, by: str, now_ms: int) -> NewAccount:
    """Add an account. Returns its TOTP secret, to be shown to its owner once (it is not shown again)."""
    if not NAME_RE.match(name):
        raise AccountError("the name must be 2-64 letters, digits or . _ @ - (no spaces)")
    check_role(role)
    check_password(password)
    secret = pyotp.random_base32()
    try:
        with tx(conn):
            cur = conn.execute(
                "INSERT INTO admin_accounts (name, role, password_hash, totp_secret, created_ms, created_by)"
                " VALUES (?, ?, ?, ?, ?, ?)", (name, role, generate_password_hash(password), secret, now_ms, by))
    except sqlite3.IntegrityError:
        raise AccountError(f"an account named {name!r} exists already") from None
    acc = get(conn, cur.lastrowid)
    assert acc is not None
    return NewAccount(acc, secret, pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=ISSUER))


def get(conn: sqlite3.Connection, account_id: int) -> Account | None:
    """The account with this id, or None."""
    r = conn.execute(f"SELECT {_COLS} FROM admin_accounts WHERE id = ?", (account_id,)).fetchone()
    return None if r is None else _row(r)


def by_name(conn: sqlite3.Connection, name: str) -> Account | None:
    """The account with this name (case-insensitive), or None."""
    r = conn.execute(f"SELECT {_COLS} FROM admin_accounts WHERE name = ?", (name,)).fetchone()
    return None if r is None else _row(r)


def all_accounts(conn: sqlite3.Connection) -> list[Account]:
    """Every account, by name."""
    return [_row(r) for r in conn.execute(f"SELECT {_COLS} FROM admin_accounts ORDER BY name")]


def count_admins(conn: sqlite3.Connection) -> int:
    """How many enabled accounts have the admin role."""
    return conn.execute("SELECT count(*) FROM admin_accounts WHERE role = 'admin' AND disabled = 0").fetchone()[0]


def set_role(conn: sqlite3.Connection, account_id: int, role: str) -> None:
    """Change a role; the last enabled admin cannot be demoted (nobody could manage accounts after)."""
    check_role(role)
    acc = get(conn, account_id)
    if acc is None:
        raise AccountError("no such account")
    if acc.role == "admin" and role != "admin" and not acc.disabled and count_admins(conn) <= 1:
        raise AccountError("this is the last admin: make another admin first")
    with tx(conn):
        conn.execute("UPDATE admin_accounts SET role = ? WHERE id = ?", (role, account_id))
        conn.execute("DELETE FROM admin_sessions WHERE account_id = ?", (account_id,))


def set_disabled(conn: sqlite3.Connection, account_id: int, disabled: bool) -> None:
    """Disable (ending its sessions) or re-enable an account; the last enabled admin stays."""
    acc = get(conn, account_id)
    if acc is None:
        raise AccountError("no such account")
    if disabled and acc.role == "admin" and not acc.disabled and count_admins(conn) <= 1:
        raise AccountError("this is the last admin: make another admin first")
    with tx(conn):
        conn.execute("UPDATE admin_accounts SET disabled = ? WHERE id = ?", (int(disabled), account_id))
        if disabled:
            conn.execute("DELETE FROM admin_sessions WHERE account_id = ?", (account_id,))


def reset_totp(conn: sqlite3.Connection, account_id: int) -> NewAccount:
    """Give an account a new TOTP secret (a lost phone); its sessions end."""
    acc = get(conn, account_id)
    if acc is None:
        raise AccountError("no such account")
    secret = pyotp.random_base32()
    with tx(conn):
        conn.execute("UPDATE admin_accounts SET totp_secret = ?, totp_last_step = 0 WHERE id = ?", (secret, account_id))
        conn.execute("DELETE FROM admin_sessions WHERE account_id = ?", (account_id,))
    return NewAccount(acc, secret, pyotp.TOTP(secret).provisioning_uri(name=acc.name, issuer_name=ISSUER))


def set_password(conn: sqlite3.Connection, account_id: int, password: str) -> None:
    """Set a new password; the account's sessions end."""
    check_password(password)
    with tx(conn):
        conn.execute("UPDATE admin_accounts SET password_hash = ? WHERE id = ?",
                     (generate_password_hash(password), account_id))
        conn.execute("DELETE FROM admin_sessions WHERE account_id = ?", (account_id,))


def wait_seconds(conn: sqlite3.Connection, name: str, ip: str, now_ms: int) -> int:
    """Seconds before the next login attempt for this name or from this address is looked at (0: now).

    After FREE_FAILURES failures in the window, each further failure doubles the wait (1, 2, 4 ... s,
    at most MAX_WAIT_S), counted from the newest failure. Counting by name stops a password being
    guessed from many addresses; counting by address stops one address trying many names.
    """
    since = now_ms - FAILURE_WINDOW_MS
    worst = 0
    for col, val in (("name", name), ("ip", ip)):
        n, last = conn.execute(f"SELECT count(*), max(at_ms) FROM admin_login_failures WHERE {col} = ? AND at_ms > ?",
                               (val, since)).fetchone()
        if n > FREE_FAILURES:
            wait_ms = min(2 ** (n - FREE_FAILURES - 1), MAX_WAIT_S) * 1000
            worst = max(worst, last + wait_ms - now_ms)
    return max(0, -(-worst // 1000))


def authenticate(conn: sqlite3.Connection, name: str, password: str, code: str, ip: str, now_ms: int) -> Account | None:
    """The account when name, password and TOTP code are right (and the account enabled), else None.

    The caller checks wait_seconds() first. Every failure is recorded for the slowing; a success
    clears the name's failures. A TOTP code is accepted within one step either side and only once.
    """
    r = conn.execute("SELECT id, password_hash, totp_secret, totp_last_step, disabled FROM admin_accounts"
                     " WHERE name = ?", (name,)).fetchone()
    ok_pw = check_password_hash(r[1] if r else _DUMMY_HASH, password)
    step = None
    if r is not None and ok_pw:
        totp = pyotp.TOTP(r[2])
        now_s = now_ms // 1000
        for delta in (0, -1, 1):
            at = now_s + delta * totp.interval
            if secrets.compare_digest(totp.at(at), code.strip()):
                step = at // totp.interval
                break
    if r is None or not ok_pw or step is None or step <= r[3] or r[4]:
        with tx(conn):
            conn.execute("INSERT INTO admin_login_failures (name, ip, at_ms) VALUES (?, ?, ?)", (name, ip, now_ms))
        return None
    with tx(conn):
        conn.execute("UPDATE admin_accounts SET totp_last_step = ? WHERE id = ?", (step, r[0]))
        conn.execute("DELETE FROM admin_login_failures WHERE name = ?", (name,))
    return get(conn, r[0])


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(conn: sqlite3.Connection, account: Account, ip: str, now_ms: int) -> str:
    """A new session token for the cookie (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    with tx(conn):
        conn.execute("INSERT INTO admin_sessions (token_hash, account_id, created_ms, seen_ms, ip) VALUES (?, ?, ?, ?, ?)",
                     (_token_hash(token), account.id, now_ms, now_ms, ip))
    return token


def session_account(conn: sqlite3.Connection, token: str, now_ms: int, idle_ms: int, max_ms: int) -> Account | None:
    """The account behind a session token, if the session is neither idle too long nor too old."""
    h = _token_hash(token)
    r = conn.execute("SELECT account_id, created_ms, seen_ms FROM admin_sessions WHERE token_hash = ?", (h,)).fetchone()
    if r is None:
        return None
    if now_ms - r[2] > idle_ms or now_ms - r[1] > max_ms:
        end_session(conn, token)
        return None
    acc = get(conn, r[0])
    if acc is None or acc.disabled:
        return None
    with tx(conn):
        conn.execute("UPDATE admin_sessions SET seen_ms = ? WHERE token_hash = ?", (now_ms, h))
    return acc


def end_session(conn: sqlite3.Connection, token: str) -> None:
    """Forget a session (logout)."""
    with tx(conn):
        conn.execute("DELETE FROM admin_sessions WHERE token_hash = ?", (_token_hash(token),))
