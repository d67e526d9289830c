"""Writing Mender Artifacts, format v3, with one payload (what ``mender-artifact write
module-image`` makes), so that building a System's Artifacts needs no Go tool.

Layout (SPEC 6): an uncompressed tar of ``version``, ``manifest``, ``manifest.sig`` (when a
signing key is given), ``header.tar[.gz|.xz|.zst]`` and ``data/0000.tar[...]``. The data
section is compressed straight to its place in the output while each payload file is hashed;
``manifest`` and the section's tar header, which need those digests and the section's size,
are written last, into the space left for them; memory use does not depend on payload size.

The output is reproducible: metadata entries carry mtime 0 and uid/gid 0 (as
``mender-artifact`` writes them) and compressors are given no timestamps, so the same inputs
give the same bytes; only payload files keep their own modification time.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol

import zstandard
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from orchestrator_core import atomic
from orchestrator_core.artifact.deflate import GzipMembersWriter
from orchestrator_core.artifact.header import MAX_JSON
from orchestrator_core.artifact.layers import CHUNK
from orchestrator_core.artifact.signature import not_a_key, read_key_file
from orchestrator_core.artifact.tarstream import BLOCK
from orchestrator_core.artifact.xz import XzWriter
from orchestrator_core.errors import ArtifactError, ConfigError
from orchestrator_core.filetree import entry_name_problem

# what each compression is called in section names; "lzma" is mender-artifact's name for xz
SUFFIXES = {"none": "", "gzip": ".gz", "xz": ".xz", "zstd": ".zst"}
COMPRESSION_NAMES = (*SUFFIXES, "lzma")
# keys the header sets itself; a payload may not claim them as its own provides or depends
RESERVED_KEYS = frozenset({"artifact_name", "artifact_group", "device_type"})
_KEY = re.compile(r"[^\s=:]+")


def compression_suffix(name: str) -> str:
    canonical = "xz" if name == "lzma" else name
    if canonical not in SUFFIXES:
        raise ConfigError(
            f"compression {name!r} is not supported; expected one of "
            f"{', '.join(COMPRESSION_NAMES)}"
        )
    return SUFFIXES[canonical]


@dataclass(frozen=True)
class ArtifactSpec:
    """Everything an Artifact with one payload says about itself."""

    artifact_name: str
    payload_type: str
    device_types: tuple[str, ...]
    files: tuple[Path, ...] = ()
    provides: Mapping[str, str] = field(default_factory=dict)  # type-info artifact_provides
    depends: Mapping[str, str] = field(default_factory=dict)  # type-info artifact_depends
    clears_provides: tuple[str, ...] = ()
    artifact_group: str | None = None  # header-info artifact_provides.artifact_group
    depends_artifact_names: tuple[str, ...] = ()  # header-info artifact_depends.artifact_name
    depends_groups: tuple[str, ...] = ()  # header-info artifact_depends.artifact_group
    meta_data: Mapping[str, Any] | None = None  # headers/0000/meta-data

    def check(self) -> None:
        """Every problem is a ``ConfigError`` naming the field and what was expected.

        What passes is what our reader (and a Mender client) accepts: plain UTF-8 names, and
        header JSON within the reader's bounds.
        """
        problems = [f"{what} {value!r} is not valid UTF-8" for what, value in self._texts()
                    if not _is_utf8(value)]
        for what, value in (("artifact name", self.artifact_name),
                            ("payload type", self.payload_type)):
            if not value or any(c.isspace() for c in value):
                problems.append(f"the {what} {value!r} must be non-empty, without white space")
        if not self.device_types:
            problems.append("at least one compatible device type is needed (--device-type)")
        problems += [f"device type {t!r} must be non-empty, without white space"
                     for t in self.device_types if not _KEY.fullmatch(t)]
        for what, mapping in (("provides", self.provides), ("depends", self.depends)):
            for key, value in mapping.items():
                if not _KEY.fullmatch(key):
                    problems.append(f"{what} key {key!r} must be non-empty, without white "
                                    f"space, '=' or ':'")
                elif key in RESERVED_KEYS:
                    problems.append(f"{what} key {key!r} is set by the Artifact header itself; "
                                    f"use the dedicated option")
                if not isinstance(value, str) or "\n" in value:
                    problems.append(f"{what} {key}: the value must be a single-line string")
        for what, values in (("artifact name it depends on", self.depends_artifact_names),
                             ("group it depends on", self.depends_groups),
                             ("cleared provides pattern", self.clears_provides)):
            if "" in values:
                problems.append(f"an empty {what} was given; each must be non-empty")
        names = [path.name for path in self.files]
        problems += [f"payload file name {name!r} is given twice (files are stored by name)"
                     for name in sorted({n for n in names if names.count(n) > 1})]
        for path in self.files:
            problem = entry_name_problem(path.name)
            if problem is not None:
                problems.append(f"payload file name {path.name!r} {problem}")
            if not path.is_file():
                problems.append(f"payload file {path} does not exist or is not a regular file")
        if not problems:
            problems += self._json_problems()
        if problems:
            raise ConfigError(f"cannot write Artifact {self.artifact_name!r}: "
                              + "; ".join(problems))

    def _texts(self) -> Iterator[tuple[str, str]]:
        """Every text that goes into the header, with what it is."""
        yield "artifact name", self.artifact_name
        yield "payload type", self.payload_type
        yield from (("device type", value) for value in self.device_types)
        for what, mapping in (("provides", self.provides), ("depends", self.depends)):
            for key, value in mapping.items():
                yield f"{what} key", key
                yield f"{what} {key!r} value", value
        yield from (("cleared provides pattern", value) for value in self.clears_provides)
        if self.artifact_group is not None:
            yield "artifact group", self.artifact_group
        yield from (("artifact name it depends on", v) for v in self.depends_artifact_names)
        yield from (("group it depends on", value) for value in self.depends_groups)

    def _json_problems(self) -> list[str]:
        problems = []
        sections = [("header-info", self.header_info()), ("type-info", self.type_info())]
        if self.meta_data is not None:
            sections.append(("meta-data", dict(self.meta_data)))
        for what, value in sections:
            try:
                size = len(_json(value))
            except UnicodeEncodeError as exc:
                problems.append(f"{what} holds text that is not valid UTF-8 ({exc.object!r})")
            except ValueError as exc:  # NaN or Infinity, which JSON does not have
                problems.append(f"{what} cannot be written as JSON ({exc})")
            else:
                if size > MAX_JSON:
                    problems.append(f"{what} would be {size} bytes; readers accept at most "
                                    f"{MAX_JSON}")
        return problems

    def header_info(self) -> dict[str, Any]:
        provides: dict[str, Any] = {"artifact_name": self.artifact_name}
        if self.artifact_group:
            provides["artifact_group"] = self.artifact_group
        depends: dict[str, Any] = {"device_type": list(self.device_types)}
        if self.depends_artifact_names:
            depends["artifact_name"] = list(self.depends_artifact_names)
        if self.depends_groups:
            depends["artifact_group"] = list(self.depends_groups)
        return {
            "payloads": [{"type": self.payload_type}],
            "artifact_provides": provides,
            "artifact_depends": depends,
        }

    def type_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"type": self.payload_type}
        if self.provides:
            info["artifact_provides"] = dict(self.provides)
        if self.depends:
            info["artifact_depends"] = dict(self.depends)
        if self.clears_provides:
            info["clears_artifact_provides"] = list(self.clears_provides)
        return info


def software_version(
    payload_type: str,
    artifact_name: str,
    *,
    filesystem: str | None = None,
    name: str | None = None,
    version: str | None = None,
) -> tuple[str, str, str]:
    """The provide mender-artifact adds by default, and the pattern that clears its family.

    ``<filesystem>.<name>.version = <version>``, defaults ``rootfs-image``, the payload type
    and the Artifact name; the clears pattern is ``<filesystem>.<name>.*``.
    """
    prefix = f"{filesystem or 'rootfs-image'}.{name or payload_type}"
    return f"{prefix}.version", version or artifact_name, f"{prefix}.*"


# --------------------------------------------------------------------------- signing


class Signer:
    """A private key that signs ``manifest`` the way Mender verifies it.

    RSA: PKCS#1 v1.5 over SHA-256. ECDSA: P-256 over SHA-256, written as the 64-byte r||s
    that ``mender-artifact`` writes (Mender clients 3.x accept only that form). Ed25519: over
    the manifest bytes themselves.
    """

    def __init__(self, path: Path, key: Any) -> None:
        self.path = path
        self._key = key

    @classmethod
    def load(cls, path: Path) -> Signer:
        data = read_key_file(path, "signing key")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError as exc:
            raise ConfigError(
                f"signing key {path} is protected by a passphrase; give an unencrypted PEM key"
            ) from exc
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise not_a_key(path, "signing key", data, True, exc) from exc
        if isinstance(key, ec.EllipticCurvePrivateKey):
            if not isinstance(key.curve, ec.SECP256R1):
                raise ConfigError(
                    f"signing key {path}: ECDSA curve {key.curve.name} is not supported; "
                    f"Mender Artifacts are signed with P-256 (prime256v1)"
                )
        elif not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            raise ConfigError(
                f"signing key {path}: {type(key).__name__} keys are not supported; use RSA, "
                f"ECDSA P-256 or Ed25519"
            )
        return cls(path, key)

    def sign(self, manifest: bytes) -> bytes:
        """The ``manifest.sig`` content: base64 text, no line breaks."""
        key = self._key
        if isinstance(key, rsa.RSAPrivateKey):
            raw = key.sign(manifest, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(key.sign(manifest, ec.ECDSA(hashes.SHA256())))
            raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            raw = key.sign(manifest)
        return base64.b64encode(raw)


# --------------------------------------------------------------------------- tar streams


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _TarStream:
    """A tar archive written front to back, laid out as Go's archive/tar does.

    ``tarfile.TarInfo`` encodes each header (GNU format, as mender-artifact writes); the
    archive ends with exactly two zero blocks, without the record padding ``tarfile.TarFile``
    would add.
    """

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out

    def add_header(self, name: str, size: int, *, mtime: int = 0) -> None:
        """The header block of a member whose ``size`` bytes (and padding) follow."""
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o600, mtime
        self._out.write(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "strict"))

    def add(self, name: str, size: int, source: _Readable, *, mtime: int = 0,
            hasher: Any = None) -> None:
        self.add_header(name, size, mtime=mtime)
        left = size
        while left:
            chunk = source.read(min(CHUNK, left))
            if not chunk:
                raise ArtifactError(f"{name} became shorter while it was being written")
            if hasher is not None:
                hasher.update(chunk)
            self._out.write(chunk)
            left -= len(chunk)
        self._out.write(bytes(-size % BLOCK))

    def add_bytes(self, name: str, data: bytes) -> None:
        self.add(name, len(data), io.BytesIO(data))

    def close(self) -> None:
        self._out.write(bytes(2 * BLOCK))


@contextmanager
def _compressed(out: IO[bytes], suffix: str) -> Iterator[IO[bytes]]:
    """A writer compressing into ``out`` (left open), finished when the block ends."""
    writer: Any
    if suffix == ".gz":
        writer = GzipMembersWriter(out)
    elif suffix == ".xz":
        writer = XzWriter(out)
    elif suffix == ".zst":
        writer = zstandard.ZstdCompressor(level=3, write_checksum=True).stream_writer(
            out, closefd=False
        )
    else:
        yield out
        return
    try:
        yield writer
    finally:
        writer.close()


def _header_tar(spec: ArtifactSpec, suffix: str) -> bytes:
    section = io.BytesIO()
    with _compressed(section, suffix) as out:
        tar = _TarStream(out)
        tar.add_bytes("header-info", _json(spec.header_info()))
        tar.add_bytes("headers/0000/type-info", _json(spec.type_info()))
        if spec.meta_data is not None:
            tar.add_bytes("headers/0000/meta-data", _json(dict(spec.meta_data)))
        tar.close()
    return section.getvalue()


class _PayloadSource:
    """A payload file being read: a failure to read it names the file, as bad input (one to
    write the output, in the same loop, must not)."""

    def __init__(self, stream: BinaryIO, path: Path) -> None:
        self._stream = stream
        self._path = path

    def read(self, size: int) -> bytes:
        try:
            return self._stream.read(size)
        except OSError as exc:
            raise _unreadable(self._path, exc) from exc


def _unreadable(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(f"payload file {path}: cannot read it ({exc.strerror or exc})")


def _data_tar(files: Sequence[Path], suffix: str, out: IO[bytes]) -> dict[str, str]:
    """Write the compressed payload tar to ``out``; the sha256 of each file by name."""
    digests = {}
    with _compressed(out, suffix) as compressed:
        tar = _TarStream(compressed)
        for path in files:
            hasher = hashlib.sha256()
            try:
                stream = path.open("rb")
            except OSError as exc:
                raise _unreadable(path, exc) from exc
            with stream:
                stat = os.fstat(stream.fileno())
                tar.add(path.name, stat.st_size, _PayloadSource(stream, path),
                        mtime=int(stat.st_mtime), hasher=hasher)
            digests[path.name] = hasher.hexdigest()
        tar.close()
    return digests


def _json(value: Any) -> bytes:
    return json.dumps(
        value, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _is_utf8(text: str) -> bool:
    # command-line arguments that are not UTF-8 arrive as lone surrogates (PEP 383)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def write_artifact(
    spec: ArtifactSpec,
    output: Path,
    *,
    compression: str = "gzip",
    signer: Signer | None = None,
) -> None:
    """Write ``spec`` as a Mender Artifact at ``output``, atomically (temp name, fsync, rename).

    Raises ``ConfigError`` for bad input (naming the field or file) and ``ArtifactError``
    when the output cannot be written.
    """
    spec.check()
    suffix = compression_suffix(compression)
    directory = output.parent
    if not directory.is_dir():
        raise ConfigError(f"cannot write Artifact {output}: directory {directory} does not "
                          f"exist")
    header = _header_tar(spec, suffix)
    version = _json({"format": "mender", "version": 3})

    def head(digests: Mapping[str, str], data_size: int) -> bytes:
        """The outer tar up to the data section's bytes: version, manifest, manifest.sig,
        header.tar and the data section's tar header."""
        entries = {
            "version": hashlib.sha256(version).hexdigest(),
            f"header.tar{suffix}": hashlib.sha256(header).hexdigest(),
            **{f"data/0000/{name}": digest for name, digest in digests.items()},
        }
        manifest = "".join(f"{entries[path]}  {path}\n" for path in sorted(entries)).encode()
        section = io.BytesIO()
        tar = _TarStream(section)
        tar.add_bytes("version", version)
        tar.add_bytes("manifest", manifest)
        if signer is not None:
            tar.add_bytes("manifest.sig", signer.sign(manifest))
        tar.add_bytes(f"header.tar{suffix}", header)
        tar.add_header(f"data/0000.tar{suffix}", data_size)
        return section.getvalue()

    # The head's size does not depend on the digests or the section's size (fixed-width
    # fields, signatures of a fixed length): the data section is compressed straight to its
    # place in the output, and the head written over the space left for it at the end,
    # rather than the section going through a temporary file and being copied.
    reserved = len(head({path.name: "0" * 64 for path in spec.files}, 0))
    try:
        # 0644: an Artifact is meant to be published
        with atomic.replacing(output, mode=0o644) as out:
            out.seek(reserved)
            digests = _data_tar(spec.files, suffix, out)
            data_size = out.tell() - reserved
            out.write(bytes(-data_size % BLOCK) + bytes(2 * BLOCK))  # padding, end of archive
            final = head(digests, data_size)
            if len(final) != reserved:
                raise RuntimeError(f"the Artifact head is {len(final)} bytes, not {reserved}")
            out.seek(0)
            out.write(final)
    except OSError as exc:
        raise ArtifactError(f"cannot write Artifact {output}: {exc.strerror or exc}") from exc
