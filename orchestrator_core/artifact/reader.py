"""One pass over a Mender Artifact v3, front to back, verifying as it goes.

The outer tar must hold, in this order: ``version``, ``manifest``, ``manifest.sig``
(optional), ``manifest-augment`` (optional), ``header.tar[.gz|.xz|.zst]``,
``header-augment.tar[...]`` (optional), ``data/0000.tar[...]``, and nothing after.

Trust is built in that order too: ``version`` is checked against ``manifest`` once that
arrives; the signature over ``manifest`` is checked before the header is looked at; the
header's compressed bytes are checked against ``manifest`` before they are decompressed and
parsed; each payload file is hashed as it streams and checked at its last byte, before that
byte is handed out. Small sections are held in memory only up to a fixed bound; payload
bytes never are.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NoReturn

from orchestrator_core.artifact.hashing import IN_FLIGHT, Sha256
from orchestrator_core.artifact.header import (
    MAX_TRAILER,
    ArtifactHeader,
    HeaderParts,
    build_header,
    parse_header_tar,
    parse_json_object,
)
from orchestrator_core.artifact.layers import (
    CHUNK,
    COMPRESSION_SUFFIXES,
    Layer,
    Readable,
    SourceLayer,
    as_bytes_view,
    decompressing,
    drain,
    read_exactly,
)
from orchestrator_core.artifact.manifest import Manifest, check_file_name, parse_manifest
from orchestrator_core.artifact.signature import check_signature, load_keys
from orchestrator_core.artifact.tarstream import BLOCK, TarMember, TarReader
from orchestrator_core.errors import ArtifactError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

MAX_VERSION = 4 << 10
MAX_MANIFEST = 1 << 20
MAX_SIGNATURE = 16 << 10
MAX_HEADER_SECTION = 16 << 20  # compressed header tar, held in memory until verified


def _suffix(name: str, base: str) -> str | None:
    """The compression suffix if ``name`` is ``base`` plus one, else ``None``."""
    if not name.startswith(base):
        return None
    suffix = name[len(base) :]
    return suffix if suffix in COMPRESSION_SUFFIXES else None


class PayloadFileReader(Layer):
    """One payload file as it streams past (``orchestrator_core.context.PayloadFile``).

    Its sha256 is checked when its last byte is read, and a mismatch raises
    ``ArtifactError`` from that read, so a consumer never receives a complete bad file.
    """

    def __init__(
        self, member: TarMember, digest: str, tar: TarReader, *, hash_aside: bool = False
    ) -> None:
        super().__init__()
        self.name = member.name
        self.size = member.size
        self._digest = digest
        self._tar = tar
        # a decompressing section hashes on a second thread (hashing.py)
        self._hash = Sha256(aside=hash_aside)
        self._left = member.size
        self._verified = False

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        return self._read_into(buffer, lent=False)

    def readinto_lent(self, buffer: WriteableBuffer, /) -> int:
        """``readinto`` for a caller that turns at least ``IN_FLIGHT + 1`` buffers and leaves
        each untouched until it fills it again: the hash thread then reads the bytes where
        they are, without a copy of its own (a random gzip payload streamed: one copy of
        every byte fewer)."""
        return self._read_into(buffer, lent=True)

    def _read_into(self, buffer: WriteableBuffer, *, lent: bool) -> int:
        if self._left == 0:
            self._verify()
            return 0
        view = as_bytes_view(buffer)[: self._left]
        count = self._tar.readinto(view)
        self._hash.update(view[:count], lent=lent)
        self._left -= count
        if self._left == 0:
            self._verify()
        return count

    def read(self, size: int | None = -1, /) -> bytes:
        return super().read(-1 if size is None else size) or b""

    def finish(self) -> None:
        """Read (and so verify) whatever the consumer left unread."""
        # a whole payload may be left (``artifact inspect`` reads nothing itself): read it in
        # chunks, as a consumer would, so a compressed section is hashed on the other thread;
        # buffers in turn, so that thread hashes some while another fills, with no copy (an
        # uncompressed one is hashed in line: Sha256 says why)
        size = min(self._left, CHUNK) or 1
        lend = self._hash.aside
        scratch = [bytearray(size) for _ in range(IN_FLIGHT + 1 if lend else 1)]
        turn = 0
        while self._read_into(scratch[turn], lent=lend):
            turn = (turn + 1) % len(scratch)

    def _verify(self) -> None:
        if self._verified:
            return
        actual = self._hash.hexdigest()
        if actual != self._digest:
            self._tar.fail(
                f"payload file data/0000/{self.name} does not match the manifest: its sha256 "
                f"is {actual}, the manifest says {self._digest}"
            )
        self._verified = True


class ArtifactReader:
    """The state of one pass: ``read_header()`` first, then ``payload_files()``."""

    def __init__(self, stream: BinaryIO, *, source_name: str, verify_keys: Sequence[Path]) -> None:
        self.source_name = source_name
        self._keys = load_keys(verify_keys)
        self.source = SourceLayer(stream, self.fail)
        self._outer = TarReader(self.source, "the file", self.fail)
        self._data: TarMember | None = None
        self._seen: set[str] = set()  # sections checked against a manifest
        self.header: ArtifactHeader | None = None

    def fail(self, problem: str) -> NoReturn:
        raise ArtifactError(f"Artifact {self.source_name}: {problem}")

    # ------------------------------------------------------------------ header

    def read_header(self) -> ArtifactHeader:
        first = self._first_member()
        if first is None:
            self.fail("is an empty tar archive, not a Mender Artifact")
        if first.name != "version":
            self.fail(f"starts with {first.name!r} instead of 'version': not a Mender Artifact")
        version_bytes = self._read(first, MAX_VERSION)
        version = parse_json_object(version_bytes, "version", self.fail)
        if version.get("format") != "mender" or version.get("version") != 3:
            self.fail(
                f"version is {version_bytes[:200].decode('utf-8', 'replace')}; only "
                f'{{"format": "mender", "version": 3}} Artifacts are supported'
            )

        manifest_member = self._expect(self._outer.next(), "manifest")
        manifest_bytes = self._read(manifest_member, MAX_MANIFEST)
        manifest = parse_manifest(manifest_bytes, "manifest", self.fail)
        self._check(manifest, "version", version_bytes)

        member = self._outer.next()
        signature: bytes | None = None
        if member is not None and member.name == "manifest.sig":
            signature = self._read(member, MAX_SIGNATURE)
            member = self._outer.next()
        augment: Manifest | None = None
        digest = hashlib.sha256(manifest_bytes).hexdigest()
        if member is not None and member.name == "manifest-augment":
            augment_bytes = self._read(member, MAX_MANIFEST)
            augment = parse_manifest(augment_bytes, "manifest-augment", self.fail)
            digest += "+" + hashlib.sha256(augment_bytes).hexdigest()
            member = self._outer.next()
        # the signature is judged before anything it vouches for is used
        status = check_signature(manifest_bytes, signature, self._keys, self.fail)

        parts = self._header_section(
            self._expect(member, "header.tar[.gz|.xz|.zst]"), "header.tar", manifest
        )
        member = self._outer.next()
        augment_parts: HeaderParts | None = None
        if member is not None and member.name.startswith("header-augment.tar"):
            if augment is None:
                self.fail("has a header-augment but no manifest-augment to check it against")
            augment_parts = self._header_section(member, "header-augment.tar", augment)
            member = self._outer.next()
        for listed in (manifest, augment) if augment else (manifest,):
            for path in listed.entries:
                if not path.startswith("data/") and path not in self._seen:
                    self.fail(f"the {listed.what} lists {path!r}; the Artifact has no such part")

        if member is not None and _suffix(member.name, "data/0000.tar") is None:
            self._out_of_order(member, "data/0000.tar[.gz|.xz|.zst] or the end")
        self._data = member
        checksums = dict(manifest.data_files)
        for name, value in (augment.data_files if augment else {}).items():
            if name in checksums:
                self.fail(f"data/0000/{name} is listed in both manifest and manifest-augment")
            checksums[name] = value
        self.header = build_header(
            parts,
            augment_parts,
            source_name=self.source_name,
            manifest_digest=digest,
            payload_checksums=tuple(checksums.items()),
            signature=status,
            fail=self.fail,
        )
        return self.header

    def _first_member(self) -> TarMember | None:
        """The outer tar's first member; a file that is not a tar at all is told so plainly
        (empty, shorter than one tar header, or not starting with one)."""
        try:
            return self._outer.next()
        except ArtifactError as exc:
            if self.source.failed:  # a download that failed says so itself
                raise
            size = self.source.position
            if size == 0:
                self.fail("is empty (0 bytes): truncated, or not a Mender Artifact at all")
            if size < BLOCK:
                self.fail(
                    f"is only {size} bytes long: truncated, or not a Mender Artifact (a tar "
                    f"archive) at all"
                )
            if size == BLOCK and isinstance(exc.__context__, tarfile.HeaderError):
                self.fail(
                    f"is not a Mender Artifact (a tar archive): its first {BLOCK} bytes are not "
                    f"a tar header (damaged tar header: {exc.__context__})"
                )
            raise

    def _read(self, member: TarMember, limit: int) -> bytes:
        if member.size > limit:
            self.fail(f"{member.name} is {member.size} bytes; at most {limit} are accepted")
        return read_exactly(self._outer.member_stream(), member.size)

    def _check(self, manifest: Manifest, name: str, data: bytes) -> None:
        expected = manifest.entries.get(name)
        if expected is None:
            self.fail(f"the {manifest.what} does not list {name!r}")
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            self.fail(
                f"{name} does not match the {manifest.what}: its sha256 is {actual}, the "
                f"{manifest.what} says {expected}"
            )
        self._seen.add(name)

    def _expect(self, member: TarMember | None, expected: str) -> TarMember:
        if member is None:
            self.fail(f"incomplete: the file ends where {expected} was expected")
        wanted = expected.split("[", 1)[0]
        if member.name != wanted and _suffix(member.name, wanted) is None:
            self._out_of_order(member, expected)
        return member

    def _out_of_order(self, member: TarMember, expected: str) -> NoReturn:
        hint = "; the data section must come last" if self._data is not None else ""
        if member.name.startswith("data/"):
            hint = "; the data section must come last, after the header"
            if _suffix(member.name, "data/0000.tar") is None:
                hint = "; only one payload (data/0000.tar) is supported"
        self.fail(f"has {member.name!r} where {expected} was expected{hint}")

    def _header_section(self, member: TarMember, base: str, manifest: Manifest) -> HeaderParts:
        suffix = _suffix(member.name, base)
        if suffix is None:
            self._out_of_order(member, f"{base}[.gz|.xz|.zst]")
        data = self._read(member, MAX_HEADER_SECTION)
        self._check(manifest, member.name, data)
        # the header is already in memory: its size is all the input buffer needs
        stream = decompressing(
            io.BytesIO(data), suffix, member.name, self.fail, input_size=max(len(data), 1)
        )
        return parse_header_tar(
            stream, member.name, self.fail, augment=base == "header-augment.tar"
        )

    # ------------------------------------------------------------------ payload

    def payload_files(self) -> Iterator[PayloadFileReader]:
        """The payload files in Artifact order; each is finished before the next is read.

        After the last one: every file the manifest lists must have come, and the rest of
        the Artifact must be its end (so the final bytes of the source are read only once
        everything else has been verified).
        """
        if self.header is None:
            raise RuntimeError("read_header() must come first")
        expected = dict(self.header.payload_checksums)
        seen: set[str] = set()
        where = "the Artifact"
        if self._data is not None:
            where = self._data.name
            suffix = _suffix(where, "data/0000.tar") or ""
            # a compressed section smaller than a chunk needs no chunk-sized (zeroed) buffer
            input_size = max(1, min(CHUNK, self._data.size))
            stream: Readable = decompressing(
                self._outer.member_stream(), suffix, where, self.fail, input_size
            )
            tar = TarReader(stream, where, self.fail)
            while (member := tar.next()) is not None:
                check_file_name(member.name, f"{where}: payload file", self.fail)
                if member.name in seen:
                    self.fail(f"{where} has the file {member.name!r} twice")
                digest = expected.get(member.name)
                if digest is None:
                    self.fail(f"{where} has the file {member.name!r}, not listed in the manifest")
                seen.add(member.name)
                payload = PayloadFileReader(member, digest, tar, hash_aside=suffix != "")
                yield payload
                payload.finish()
            if drain(stream, MAX_TRAILER) is None:
                self.fail(
                    f"{where} goes on for more than {MAX_TRAILER} bytes after its end-of-archive "
                    f"marker; refusing it as a likely decompression bomb"
                )
        missing = sorted(set(expected) - seen)
        if missing:
            self.fail(f"the manifest lists data/0000/{missing[0]}, but {where} has no such file")
        after = self._outer.next()
        if after is not None:
            self._out_of_order(after, "the end of the Artifact")
        if drain(self.source, MAX_TRAILER) is None:
            self.fail(f"has more than {MAX_TRAILER} bytes after its end-of-archive marker")


def read_header(
    stream: BinaryIO, *, source_name: str, verify_keys: Sequence[Path] = ()
) -> ArtifactHeader:
    """Read and verify an Artifact's header: one pass up to the start of its data section.

    Raises ``ArtifactError`` naming ``source_name`` and the problem, or ``ConfigError`` for
    a verification key that cannot be used.
    """
    return ArtifactReader(stream, source_name=source_name, verify_keys=verify_keys).read_header()
