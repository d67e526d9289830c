"""Writes Mender Artifacts in Python, part by part, so tests can make what Debian's
``mender-artifact`` 3.9 cannot (zstd, Ed25519, ECDSA in DER form) and what no honest
writer would (every kind of broken or hostile Artifact).

``ArtifactParts`` is an ordered list of outer members; tests change it (replace, reorder,
drop, insert) and ``assemble`` it into the bytes of a ``.mender`` file.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import lzma
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import zstandard

Signer = Callable[[bytes], bytes]  # manifest bytes -> raw signature


@dataclass
class Member:
    name: str
    data: bytes = b""
    kind: bytes = tarfile.REGTYPE
    link: str = ""
    size: int | None = None  # a size to declare instead of len(data)


def tar(members: Iterable[Member | tuple[str, bytes]], *, fmt: int = tarfile.GNU_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as archive:
        for item in members:
            member = item if isinstance(item, Member) else Member(*item)
            info = tarfile.TarInfo(member.name)
            info.type = member.kind
            info.linkname = member.link
            info.mode = 0o644
            info.size = len(member.data) if member.kind == tarfile.REGTYPE else 0
            archive.addfile(info, io.BytesIO(member.data) if info.size else None)
    return out.getvalue()


def compress(data: bytes, suffix: str) -> bytes:
    if suffix == ".gz":
        return gzip.compress(data, compresslevel=1, mtime=0)
    if suffix == ".xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ)
    if suffix == ".zst":
        return zstandard.ZstdCompressor(level=3).compress(data)
    return data


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def as_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass
class ArtifactParts:
    parts: list[tuple[str, bytes]] = field(default_factory=list)

    def names(self) -> list[str]:
        return [name for name, _ in self.parts]

    def get(self, name: str) -> bytes:
        return dict(self.parts)[name]

    def replace(self, name: str, data: bytes) -> ArtifactParts:
        self.parts = [(n, data if n == name else d) for n, d in self.parts]
        return self

    def drop(self, name: str) -> ArtifactParts:
        self.parts = [(n, d) for n, d in self.parts if n != name]
        return self

    def assemble(self) -> bytes:
        return tar(self.parts)


def manifest_lines(entries: dict[str, bytes]) -> bytes:
    return b"".join(f"{sha(data)}  {name}\n".encode() for name, data in sorted(entries.items()))


def header_tar(
    *,
    name: str,
    payload_type: str | None,
    device_types: Iterable[str],
    type_info: dict[str, Any] | None = None,
    meta_data: dict[str, Any] | None = None,
    scripts: Iterable[str] = (),
    header_info: bytes | None = None,
) -> bytes:
    info = header_info or as_json(
        {
            "payloads": [{"type": payload_type}],
            "artifact_provides": {"artifact_name": name},
            "artifact_depends": {"device_type": list(device_types)},
        }
    )
    members: list[tuple[str, bytes]] = [("header-info", info)]
    members += [(f"scripts/{script}", b"#!/bin/sh\nexit 0\n") for script in scripts]
    if type_info is None:
        type_info = {"type": payload_type, "artifact_provides": {}}
    members.append(("headers/0000/type-info", as_json(type_info)))
    if meta_data is not None:
        members.append(("headers/0000/meta-data", as_json(meta_data)))
    return tar(members)


def build(
    files: dict[str, bytes],
    *,
    name: str = "py-artifact",
    payload_type: str | None = "py-interface",
    device_types: Iterable[str] = ("py-device",),
    compression: str = ".zst",
    type_info: dict[str, Any] | None = None,
    sign: Signer | None = None,
    header: bytes | None = None,
    data: bytes | None = None,
    manifest_extra: dict[str, bytes] | None = None,
) -> ArtifactParts:
    """A well-formed Artifact as parts; ``header``/``data`` replace the (uncompressed) tars,
    ``manifest_extra`` adds manifest entries (path -> the bytes whose checksum to list)."""
    version = b'{"format":"mender","version":3}'
    header_bytes = compress(
        header
        if header is not None
        else header_tar(
            name=name, payload_type=payload_type, device_types=device_types, type_info=type_info
        ),
        compression,
    )
    data_bytes = compress(data if data is not None else tar(files.items()), compression)
    entries = {"version": version, f"header.tar{compression}": header_bytes}
    entries.update({f"data/0000/{file}": content for file, content in files.items()})
    entries.update(manifest_extra or {})
    manifest = manifest_lines(entries)
    parts = [("version", version), ("manifest", manifest)]
    if sign is not None:
        parts.append(("manifest.sig", base64.b64encode(sign(manifest))))
    parts += [
        (f"header.tar{compression}", header_bytes),
        (f"data/0000.tar{compression}", data_bytes),
    ]
    return ArtifactParts(parts)


def resign(parts: ArtifactParts, sign: Signer) -> ArtifactParts:
    return parts.replace("manifest.sig", base64.b64encode(sign(parts.get("manifest"))))


def remanifest(parts: ArtifactParts, files: dict[str, bytes]) -> ArtifactParts:
    """Recompute the manifest from the current parts (plus payload ``files``)."""
    entries = {n: d for n, d in parts.parts if n == "version" or n.startswith("header.tar")}
    entries.update({f"data/0000/{file}": content for file, content in files.items()})
    return parts.replace("manifest", manifest_lines(entries))


def parts_of(data: bytes) -> ArtifactParts:
    """The outer members of an existing Artifact (one made by mender-artifact, say)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        members = archive.getmembers()
        return ArtifactParts(
            [(m.name, archive.extractfile(m).read()) for m in members]  # type: ignore[union-attr]
        )


def tar_entry(name: str, data: bytes, size: int | None = None) -> bytes:
    """One regular-file entry (header, data, padding) without an end-of-archive marker."""
    info = tarfile.TarInfo(name)
    info.size = len(data) if size is None else size
    info.mode = 0o644
    return info.tobuf(tarfile.GNU_FORMAT) + data + bytes(-len(data) % 512)


def zstd_with_zeros(prefix: bytes, zeros: int) -> bytes:
    """zstd of ``prefix`` followed by ``zeros`` zero bytes, compressed chunk by chunk so the
    test never holds the expanded bytes (the shape of a decompression bomb)."""
    compressor = zstandard.ZstdCompressor(level=1).compressobj()
    out = [compressor.compress(prefix)]
    chunk = bytes(1 << 20)
    while zeros:
        step = min(zeros, len(chunk))
        out.append(compressor.compress(chunk[:step]))
        zeros -= step
    out.append(compressor.flush())
    return b"".join(out)
