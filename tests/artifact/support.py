"""What the artifact tests share: where the fixtures are, the real writer, keys, results."""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from systems import FIXTURES as FIXTURES  # the artifact tests take it from here

from orchestrator_core.artifact.reader import ArtifactReader

MENDER_ARTIFACT = shutil.which("mender-artifact")
TOOL = MENDER_ARTIFACT or "mender-artifact"


def run(argv: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{argv} failed ({done.returncode}): {done.stderr}{done.stdout}")
    return done.stdout


def read_payload(artifact: bytes, buffer_size: int) -> dict[str, bytes]:
    """Every payload file of ``artifact``, read through ``buffer_size``-byte buffers."""
    reader = ArtifactReader(io.BytesIO(artifact), source_name="test.mender", verify_keys=())
    reader.read_header()
    files = {}
    buffer = bytearray(buffer_size)
    for payload in reader.payload_files():
        parts = []
        while count := payload.readinto(buffer):
            parts.append(bytes(buffer[:count]))
        files[payload.name] = b"".join(parts)
    return files


@dataclass(frozen=True)
class Keys:
    rsa_private: Path  # PKCS#1, from openssl genrsa -traditional
    rsa_public: Path
    ec_private: Path
    ec_public: Path
    other_rsa_public: Path
    other_rsa: rsa.RSAPrivateKey
    ed25519: ed25519.Ed25519PrivateKey
    ed25519_public: Path
    ec: ec.EllipticCurvePrivateKey

    def sign_rsa_other(self, data: bytes) -> bytes:
        return self.other_rsa.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def sign_ed25519(self, data: bytes) -> bytes:
        return self.ed25519.sign(data)

    def sign_ecdsa_der(self, data: bytes) -> bytes:
        return self.ec.sign(data, ec.ECDSA(hashes.SHA256()))


def public_pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


@dataclass(frozen=True)
class Made:
    """An Artifact written by mender-artifact, and what went into it."""

    path: Path
    files: dict[str, bytes]
