"""Connection tokens from an existing site: JWTs verified with PyJWT.

With ``--token-secret`` the site signs with HMAC (HS256, HS384, HS512); with
``--token-public-key`` it signs with its private key (RS256 for an RSA key,
ES256 for a P-256 key). Only the algorithms of the configured key are
accepted, so ``alg: none`` and HS/RS key confusion are refused by
construction. A token's text never reaches a log line: failures are logged
by their reason only.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .errors import ChatError, CommandError, SettingsError
from .protocol import validate_room
from .settings import Settings

log = logging.getLogger(__name__)

MAX_TOKEN_BYTES: Final = 4096  # before any parsing: a token is a few hundred bytes
MAX_SUBJECT_CHARS: Final = 200
HMAC_ALGORITHMS: Final = ("HS256", "HS384", "HS512")


class TokenError(ChatError):
    """A connection token was refused; ``reason`` is safe to show and log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a valid token says about its user."""

    subject: str
    name: str | None
    rooms: list[str] | None  # None: any room
    expires: float


class TokenVerifier:
    """Checks tokens against the one key the operator configured."""

    def __init__(self, key: Any, algorithms: list[str], audience: str, leeway: float) -> None:
        self._key = key
        self.algorithms = algorithms
        self.audience = audience
        self.leeway = leeway

    def verify(self, token: str) -> TokenClaims:
        if len(token.encode("utf-8", "replace")) > MAX_TOKEN_BYTES:
            raise TokenError(f"token is larger than {MAX_TOKEN_BYTES} bytes")
        required = ["exp", "sub", *(["aud"] if self.audience else [])]
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self.algorithms,
                audience=self.audience or None,
                # Without a configured audience an "aud" claim is not checked.
                options={"require": required, "verify_aud": bool(self.audience)},
                leeway=self.leeway,
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.InvalidAlgorithmError:
            raise TokenError("token algorithm not allowed") from None
        except jwt.InvalidSignatureError:
            raise TokenError("token signature is invalid") from None
        except jwt.InvalidAudienceError:
            raise TokenError("token is for another audience") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"token has no {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"token is invalid ({type(exc).__name__})") from None
        return _claims(claims)


def _claims(claims: dict[str, Any]) -> TokenClaims:
    subject, name, rooms = claims.get("sub"), claims.get("name"), claims.get("rooms")
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_CHARS:
        raise TokenError(f"token 'sub' must be a string of 1 to {MAX_SUBJECT_CHARS} characters")
    if name is not None and not isinstance(name, str):
        raise TokenError("token 'name' must be a string")
    if rooms is not None and (
        not isinstance(rooms, list) or not all(isinstance(room, str) for room in rooms)
    ):
        raise TokenError("token 'rooms' must be a list of room names")
    if rooms is not None:
        rooms = _valid_rooms(rooms)
    return TokenClaims(subject, name, rooms, float(claims["exp"]))


def _valid_rooms(rooms: list[str]) -> list[str]:
    """The canonical names of a token's rooms. One invalid name refuses the
    whole token: the site meant something this chat cannot honour, and
    joining fewer rooms than it said would hide that."""
    try:
        return [validate_room(room) for room in rooms]
    except CommandError:
        raise TokenError("token rooms invalid") from None


def build_verifier(settings: Settings) -> TokenVerifier | None:
    """The verifier for the configured key (None: tokens are not accepted)."""
    if settings.token_secret and settings.token_public_key:
        raise SettingsError("set token_secret or token_public_key, not both")
    audience, leeway = settings.token_audience, settings.token_leeway
    if settings.token_secret:
        return TokenVerifier(settings.token_secret, list(HMAC_ALGORITHMS), audience, leeway)
    if not settings.token_public_key:
        return None
    key = _load_public_key(settings.token_public_key)
    if isinstance(key, RSAPublicKey):
        return TokenVerifier(key, ["RS256"], audience, leeway)
    if isinstance(key, EllipticCurvePublicKey):
        if not isinstance(key.curve, SECP256R1):
            raise SettingsError(
                f"token_public_key is an EC key on {key.curve.name}; "
                "ES256 needs a P-256 (secp256r1) key"
            )
        return TokenVerifier(key, ["ES256"], audience, leeway)
    raise SettingsError("token_public_key must be an RSA or EC (P-256) public key")


def _load_public_key(value: str) -> Any:
    """The key from PEM text, or from the PEM file ``value`` names."""
    if value.lstrip().startswith("-----BEGIN"):
        pem = value.encode()
    else:
        try:
            pem = Path(value).read_bytes()
        except OSError as exc:
            raise SettingsError(f"cannot read token_public_key {value}: {exc.strerror}") from None
    try:
        return load_pem_public_key(pem)
    except ValueError:
        raise SettingsError("token_public_key is not a PEM public key") from None
