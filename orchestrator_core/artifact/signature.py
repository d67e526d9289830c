"""``manifest.sig``: the signature over the ``manifest`` bytes, and the keys that check it.

Accepted, as Mender's tools write them: RSA PKCS#1 v1.5 over SHA-256, ECDSA P-256 over
SHA-256 (ASN.1 DER, or the 64-byte r||s that ``mender-artifact`` writes), Ed25519 over the
manifest itself. Keys (``ArtifactVerifyKey(s)``) are PEM public keys, tried in order.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from orchestrator_core.artifact.layers import Fail
from orchestrator_core.errors import ConfigError

# cryptography is imported where a key is used: most deployments configure no key, and its
# import is a sizeable part of the orchestrator's start-up
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    VerifyKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class SignatureState(enum.Enum):
    UNSIGNED = "no signature"
    NOT_CHECKED = "signed (not verified: no verification key given)"
    VERIFIED = "signed and verified correctly"


class SignatureStatus(NamedTuple):
    state: SignatureState
    key: Path | None = None  # the key that verified it

    def describe(self) -> str:
        if self.key is not None:
            return f"{self.state.value} with {self.key}"
        return self.state.value


MAX_KEY_FILE = 1 << 20  # a PEM key is a few KiB; a wrong file (say /dev/zero) must not fill memory
_FAQ_LINK = re.compile(r"\s*See https?://\S+ for more details\.")


def read_key_file(path: Path, role: str) -> bytes:
    """The bytes of a PEM key file; ``role`` ("verification key", "signing key") names it in
    the ``ConfigError`` raised when it cannot be read."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"{role} {path}: cannot read it ({exc.strerror or exc})") from exc
    if len(data) > MAX_KEY_FILE:
        raise ConfigError(
            f"{role} {path}: more than {MAX_KEY_FILE} bytes, which no PEM key file is"
        )
    return data


def not_a_key(path: Path, role: str, data: bytes, private: bool, error: Exception) -> ConfigError:
    """The error for ``data`` that did not load as the PEM key (``private`` or public) wanted:
    the likely mix-ups are named, else the loader's reason (without its FAQ link) and the
    forms that are expected."""
    kind = "private" if private else "public"
    if not private and b"PRIVATE KEY-----" in data:
        return ConfigError(
            f"{role} {path}: not a PEM public key (it is a private key; verification needs the "
            f"public key, which 'openssl pkey -in {path} -pubout' prints)"
        )
    if private and (b"PUBLIC KEY-----" in data or b"CERTIFICATE-----" in data):
        return ConfigError(
            f"{role} {path}: not a PEM private key (it is a public key or a certificate; "
            f"signing needs the private key)"
        )
    if b"-----BEGIN" not in data:
        reason = "there is no '-----BEGIN ...' line in it"
    else:
        reason = _FAQ_LINK.sub("", str(error)) or type(error).__name__
    expected = (
        "'-----BEGIN RSA PRIVATE KEY-----', '-----BEGIN EC PRIVATE KEY-----' or "
        "'-----BEGIN PRIVATE KEY-----'"
        if private
        else "'-----BEGIN PUBLIC KEY-----', as 'openssl pkey -pubout' writes it"
    )
    return ConfigError(f"{role} {path}: not a PEM {kind} key ({reason}); expected {expected}")


def load_keys(paths: Sequence[Path]) -> list[tuple[Path, VerifyKey]]:
    """Read the verification keys; a key that cannot be used is a configuration error."""
    if not paths:
        return []
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    keys: list[tuple[Path, VerifyKey]] = []
    for path in paths:
        data = read_key_file(path, "verification key")
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise not_a_key(path, "verification key", data, False, exc) from exc
        if isinstance(key, ec.EllipticCurvePublicKey) and not isinstance(key.curve, ec.SECP256R1):
            raise ConfigError(
                f"verification key {path}: ECDSA curve {key.curve.name} is not supported; "
                f"Mender Artifacts are signed with P-256 (prime256v1)"
            )
        if not isinstance(
            key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)
        ):
            raise ConfigError(
                f"verification key {path}: {type(key).__name__} keys are not supported; "
                f"use RSA, ECDSA P-256 or Ed25519"
            )
        keys.append((path, key))
    return keys


def _verifies(key: VerifyKey, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if len(signature) == 64:
                r = int.from_bytes(signature[:32], "big")
                s = int.from_bytes(signature[32:], "big")
                signature = encode_dss_signature(r, s)
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def check_signature(
    manifest: bytes,
    signature_text: bytes | None,
    keys: Sequence[tuple[Path, VerifyKey]],
    fail: Fail,
) -> SignatureStatus:
    """The signature status; with keys given, anything but a valid signature fails."""
    if not keys:
        return SignatureStatus(
            SignatureState.UNSIGNED if signature_text is None else SignatureState.NOT_CHECKED
        )
    if signature_text is None:
        fail(
            "is not signed, but a verification key is configured (ArtifactVerifyKey); "
            "only signed Artifacts are accepted"
        )
    try:
        signature = base64.b64decode(b"".join(signature_text.split()), validate=True)
    except binascii.Error:
        fail("manifest.sig is not base64 text")
    for path, key in keys:
        if _verifies(key, signature, manifest):
            return SignatureStatus(SignatureState.VERIFIED, path)
    names = ", ".join(str(path) for path, _ in keys)
    fail(
        f"its signature does not verify with the configured key(s) ({names}): it was signed "
        f"with another key, or the manifest was changed after signing"
    )
