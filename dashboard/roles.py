"""Named operators, their roles, and what each role may do.

Operators are declared in the config file with a hash of their token, never
the token (``chatserver admin hash-token`` makes both)::

    [[operators]]
    name = "ann"
    role = "moderator"
    token_hash = "sha256$..."

or as ``--operators name:role:hash,...`` / ``CHAT_OPERATORS``. The
``--admin-token`` is one more operator, ``admin`` with role ``admin``.

Roles rise: ``viewer`` sees everything and changes nothing; ``moderator``
also kicks, mutes, unmutes, bans, deletes, announces and lifts the bans it
made; ``admin`` also lifts anyone's bans and lists the operators.

Hashes: ``sha256$HEX`` for a generated 256-bit token (a fast hash is enough
when the secret cannot be guessed), ``scrypt$N$R$P$SALT$HASH`` for a token
an operator chose (a slow KDF, as for passwords). Every check compares in
constant time and tries every operator, so timing says nothing about which
one nearly matched; a token that matched once is remembered under a keyed
digest so that scrypt runs once per token, not once per API call.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping

from chatserver.errors import CommandError, SettingsError
from chatserver.moderation import Moderation

from .auth import MAX_TOKEN_CHARS, ROLES, Operator, token_matches

ADMIN_NAME = "admin"
# What each dashboard/API action needs (reading needs only "viewer").
ACTION_ROLES: dict[str, str] = {
    "kick": "moderator",
    "mute": "moderator",
    "unmute": "moderator",
    "ban": "moderator",
    "unban": "moderator",  # a moderator's own bans; see authorize()
    "announce": "moderator",
    "bulk": "moderator",
    "delete": "moderator",
    "lock_account": "moderator",  # also unlock; a password reset stays the admin's
}
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MAX_CACHED = 1000


def operator_of(actor: str) -> str:
    """The operator's name in an audit actor written by :meth:`Operator.actor`."""
    name, sep, _ = actor.partition(" via ")
    return name if sep else ""


# --------------------------------------------------------------------------- hashes


def hash_token(token: str, *, slow: bool) -> str:
    """The stored form of ``token``: scrypt when ``slow`` (a chosen token), else sha256."""
    if not slow:
        return "sha256$" + hashlib.sha256(token.encode("utf-8")).hexdigest()
    salt = secrets.token_bytes(16)
    digest = _scrypt(token, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def new_token() -> str:
    """A fresh 256-bit operator token."""
    return secrets.token_urlsafe(32)


def check_hash(token: str, stored: str) -> bool:
    """Whether ``token`` hashes to ``stored`` (constant-time compare)."""
    kind, _, rest = stored.partition("$")
    given = token.encode("utf-8")
    if kind == "sha256":
        return hmac.compare_digest(hashlib.sha256(given).hexdigest(), rest)
    if kind == "scrypt":
        n, r, p, salt, digest = rest.split("$")
        return hmac.compare_digest(
            _scrypt(token, _unb64(salt), int(n), int(r), int(p)), _unb64(digest)
        )
    return False


def _scrypt(token: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(token.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _valid_hash(stored: str) -> bool:
    kind, _, rest = stored.partition("$")
    if kind == "sha256":
        return len(rest) == 64 and all(c in "0123456789abcdef" for c in rest)
    if kind == "scrypt":
        parts = rest.split("$")
        try:
            return len(parts) == 5 and all(int(x) > 0 for x in parts[:3]) and bool(_unb64(parts[4]))
        except ValueError:
            return False
    return False


# --------------------------------------------------------------------------- the roster


class Operators:
    """Everyone who may log in, and the check of a presented token."""

    def __init__(self, operators: Iterable[Operator], admin_token: str) -> None:
        self.declared = list(operators)
        self.admin_token = admin_token
        self._key = secrets.token_bytes(32)
        self._known: dict[bytes, Operator] = {}

    @classmethod
    def from_specs(cls, specs: Iterable[str], admin_token: str) -> Operators:
        """From ``name:role:hash`` entries (the setting); bad entries raise SettingsError."""
        operators: list[Operator] = []
        for spec in specs:
            name, role, token_hash = [*spec.split(":", 2), "", ""][:3]
            name, role, token_hash = name.strip(), role.strip(), token_hash.strip()
            if not name or role not in ROLES or not _valid_hash(token_hash):
                raise SettingsError(
                    f"operator {name or spec!r}: needs a name, a role ({', '.join(ROLES)}) "
                    "and a token_hash from 'chatserver admin hash-token'"
                )
            if (name == ADMIN_NAME and admin_token) or name in {o.name for o in operators}:
                raise SettingsError(f"operator {name!r} is declared twice")
            operators.append(Operator(name, role, token_hash))
        return cls(operators, admin_token)

    def authenticate(self, token: str) -> Operator | None:
        """The operator whose token this is, else None."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        try:
            given = token.encode("utf-8")
        except UnicodeEncodeError:
            return None
        key = hmac.new(self._key, given, hashlib.sha256).digest()
        known = self._known.get(key)
        if known is not None:
            return known
        found: Operator | None = None
        if token_matches(token, self.admin_token):
            found = Operator(ADMIN_NAME, "admin")
        for operator in self.declared:  # no early exit: try every hash
            if check_hash(token, operator.token_hash) and found is None:
                found = operator
        if found is not None:
            if len(self._known) >= MAX_CACHED:
                self._known.clear()
            self._known[key] = found
        return found

    def named(self, name: str) -> Operator | None:
        """The operator called ``name`` (a shared session names its operator)."""
        if name == ADMIN_NAME and self.admin_token:
            return Operator(ADMIN_NAME, "admin")
        return next((o for o in self.declared if o.name == name), None)

    def listing(self) -> list[dict[str, str]]:
        admin = [Operator(ADMIN_NAME, "admin").as_dict()] if self.admin_token else []
        return admin + [operator.as_dict() for operator in self.declared]


def may_lift(operator: Operator, ban_actor: str) -> bool:
    """Whether ``operator`` may lift a ban made by ``ban_actor``."""
    return operator.may("admin") or (
        operator.may("moderator") and operator_of(ban_actor) == operator.name
    )


def authorize(
    operator: Operator, action: str, fields: Mapping[str, object], moderation: Moderation
) -> None:
    """Raise ``forbidden`` unless ``operator`` may run ``action`` with ``fields``."""
    needed = ACTION_ROLES.get(action, "admin")
    if not operator.may(needed):
        raise CommandError(
            "forbidden", f"{operator.name} is a {operator.role}; {action} needs {needed}"
        )
    if action == "unban" and not operator.may("admin"):
        ban_id = fields.get("ban_id")
        ban = next((b for b in moderation.active_bans() if str(b.id) == str(ban_id)), None)
        if ban is not None and not may_lift(operator, ban.actor):
            raise CommandError(
                "forbidden", f"ban {ban.id} was made by {ban.actor}; lifting it needs admin"
            )
