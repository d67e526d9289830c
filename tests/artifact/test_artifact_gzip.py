"""gzip data sections read in small feeds, with ISA-L and with the standard library's zlib.

The reader hands the decompressor FEED bytes at a time from a larger input buffer; a gzip
stream made of several members (what our writer makes, one per MiB) must read the same
wherever a member ends: inside a feed, on its last byte, or with the next member's magic
split between two feeds. A corrupt member is reported whichever library inflates it.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
import types
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator_core.artifact import deflate, hashing
from orchestrator_core.artifact.layers import FEED
from orchestrator_core.artifact.reader import ArtifactReader
from orchestrator_core.errors import ArtifactError

from . import artifact_builder as ab
from .support import read_payload


@pytest.fixture(params=["isal", "zlib"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "isal":
        pytest.importorskip("isal")
    monkeypatch.setattr(deflate, "FORCE_STDLIB", request.param == "zlib")
    assert deflate.backend_name() == request.param
    yield request.param


def stored_member(data: bytes) -> bytes:
    """A gzip member holding ``data`` uncompressed: its size is ``len(data) + 23`` below 64 KiB
    (10 bytes of gzip header, 5 of stored-block header, 8 of trailer)."""
    return zlib.compress(data, 0, deflate.GZIP_WBITS)


@pytest.mark.parametrize("first_member", [FEED - 1, FEED, FEED - 20, FEED + 7])
@pytest.mark.parametrize("buffer_size", [1 << 20, 4093])
def test_members_may_end_anywhere_in_a_feed(
    backend: str, first_member: int, buffer_size: int
) -> None:
    files = {"firmware.bin": os.urandom(3 * FEED), "notes.txt": b"release notes\n" * 100}
    data_tar = ab.tar(files.items())
    # the first member is `first_member` bytes long: with FEED - 1 the next member's gzip
    # magic straddles the first two feeds
    head = data_tar[: first_member - 23] if first_member < FEED else data_tar[:first_member]
    head_member = stored_member(head) if first_member < FEED else zlib.compress(head, 9, 31)
    rest = data_tar[len(head) :]
    section = head_member + stored_member(rest[:1000]) + zlib.compress(rest[1000:], 6, 31)
    artifact = ab.build(files, compression=".gz", data=b"").replace(
        "data/0000.tar.gz", section
    ).assemble()
    assert read_payload(artifact, buffer_size) == files


def test_a_corrupt_member_is_named(backend: str) -> None:
    files = {"firmware.bin": os.urandom(2 * FEED)}
    data_tar = ab.tar(files.items())
    second = bytearray(zlib.compress(data_tar[FEED:], 6, 31))
    second[10] |= 0b110  # the first deflate block's type: 3, which does not exist
    section = stored_member(data_tar[: FEED - 23]) + stored_member(data_tar[FEED - 23 : FEED])
    section += bytes(second)
    artifact = ab.build(files, compression=".gz", data=b"").replace(
        "data/0000.tar.gz", section
    ).assemble()
    with pytest.raises(ArtifactError, match=r"data/0000\.tar\.gz is not valid gzip data"):
        read_payload(artifact, 1 << 20)


def test_a_bad_payload_checksum_is_caught_when_hashing_on_the_other_thread(backend: str) -> None:
    """A compressed section's payload is hashed on a second thread: the mismatch must still
    fail the read that hands out the file's last byte."""
    files = {"firmware.bin": os.urandom(5 * FEED)}
    parts = ab.build(files, compression=".gz")
    tampered = bytearray(ab.tar(files.items()))
    tampered[512 + 3 * FEED] ^= 1
    parts.replace("data/0000.tar.gz", zlib.compress(bytes(tampered), 6, 31))
    reader = ArtifactReader(io.BytesIO(parts.assemble()), source_name="t.mender", verify_keys=())
    reader.read_header()
    buffer = bytearray(1 << 20)
    payload = next(reader.payload_files())
    read = 0
    with pytest.raises(ArtifactError, match=r"firmware\.bin does not match the manifest"):
        while count := payload.readinto(buffer):
            read += count
    assert read < len(files["firmware.bin"])


@pytest.mark.parametrize("tamper_at", [None, (5 << 20) // 2])
def test_a_payload_left_unread_is_hashed_from_buffers_in_turn(
    backend: str, tamper_at: int | None
) -> None:
    """``finish`` lends its buffers to the hashing thread uncopied: over five MiB (each
    buffer filled again) the digest must still be that of the bytes, and a flipped byte in
    the middle must still be caught."""
    files = {"firmware.bin": os.urandom(5 << 20), "notes.txt": b"notes\n"}
    parts = ab.build(files, compression=".gz")
    if tamper_at is not None:
        tampered = bytearray(ab.tar(files.items()))
        tampered[512 + tamper_at] ^= 1
        parts.replace("data/0000.tar.gz", zlib.compress(bytes(tampered), 1, 31))
    reader = ArtifactReader(io.BytesIO(parts.assemble()), source_name="t.mender", verify_keys=())
    reader.read_header()
    if tamper_at is None:
        assert [payload.name for payload in reader.payload_files()] == list(files)
    else:
        with pytest.raises(ArtifactError, match=r"firmware\.bin does not match the manifest"):
            list(reader.payload_files())


def test_a_lent_buffer_is_hashed_before_the_caller_may_fill_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The caller turning ``IN_FLIGHT + 1`` buffers refills each as soon as its contract
    allows; with a hash thread slower than the refills, the digest must still be that of
    what was handed over, chunk by chunk."""
    hashed: list[bytes] = []

    class SlowSha256:
        def __init__(self) -> None:
            self._inner = hashlib.sha256()

        def update(self, data: memoryview) -> None:
            time.sleep(0.005)
            hashed.append(bytes(data))
            self._inner.update(data)

        def hexdigest(self) -> str:
            return self._inner.hexdigest()

    monkeypatch.setattr(hashing, "hashlib", types.SimpleNamespace(sha256=SlowSha256))
    digest = hashing.Sha256(aside=True)
    buffers = [bytearray(hashing.ASIDE_MIN) for _ in range(hashing.IN_FLIGHT + 1)]
    given = []
    for turn in range(12):
        buffer = buffers[turn % len(buffers)]
        buffer[:] = os.urandom(len(buffer))  # refilled: its previous chunk must be hashed
        given.append(bytes(buffer))
        digest.update(memoryview(buffer), lent=True)
    assert digest.hexdigest() == hashlib.sha256(b"".join(given)).hexdigest()
    assert hashed == given


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 3 * 65535 + 7, 1 << 20])
def test_stored_members_are_gzip_of_blocks_of_64_kib_less_one(backend: str, size: int) -> None:
    """What the writer makes of an incompressible MiB: one gzip member (mtime 0) whose
    deflate blocks are stored, 5 bytes of block header per 65535 bytes, any reader's gzip."""
    data = os.urandom(size)
    member = deflate.stored_member(data)
    assert zlib.decompress(member, 31) == data
    assert member[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\x03"
    assert len(member) == 10 + 5 * max(1, -(-size // 65535)) + size + 8
    reader = ArtifactReader(
        io.BytesIO(ab.build({"blob": data}, compression=".gz")
                   .replace("data/0000.tar.gz", b"".join(
                       deflate.stored_member(part) for part in chunks(ab.tar([("blob", data)]))))
                   .assemble()),
        source_name="t.mender", verify_keys=())
    reader.read_header()
    assert [payload.read() for payload in reader.payload_files()] == [data]


def chunks(data: bytes) -> list[bytes]:
    return [data[offset : offset + (1 << 20)] for offset in range(0, len(data), 1 << 20)]


SPY_ON_ISAL = """
import sys, threading
from isal import isal_zlib
threads_at_first_call = []

def spied(function):
    def call(*args, **kwargs):
        if not threads_at_first_call:
            threads_at_first_call.append(sorted(t.name for t in threading.enumerate()))
        return function(*args, **kwargs)
    return call

for name in ("compress", "compressobj", "crc32", "decompress", "decompressobj"):
    setattr(isal_zlib, name, spied(getattr(isal_zlib, name)))

from orchestrator_core.artifact.reader import ArtifactReader
with open(sys.argv[1], "rb") as stream:
    reader = ArtifactReader(stream, source_name=sys.argv[1], verify_keys=())
    reader.read_header()
    print([len(payload.read()) for payload in reader.payload_files()])
print(threads_at_first_call[0])
"""


def test_the_hash_thread_is_started_before_isal_first_runs(tmp_path: Path) -> None:
    """ISA-L leaves the vector registers' upper halves in use, and a new thread starts with a
    copy of its creator's: a hash thread started after that hashed a third slower. So in a
    fresh process, the thread exists by the time ISA-L is first called (the header)."""
    pytest.importorskip("isal")
    artifact = tmp_path / "gzip.mender"
    artifact.write_bytes(ab.build({"firmware.bin": os.urandom(3 << 20)}, compression=".gz")
                         .assemble())
    result = subprocess.run([sys.executable, "-c", SPY_ON_ISAL, str(artifact)],
                            capture_output=True, text=True, check=True)
    sizes, threads = result.stdout.splitlines()
    assert sizes == str([3 << 20])
    assert "artifact-sha256" in threads


def test_a_child_made_by_fork_hashes_on_a_thread_of_its_own() -> None:
    """The parent's hash thread does not exist in a forked child: a chunk handed aside there
    must still be hashed, not wait forever on a queue nobody reads."""
    chunk = os.urandom(hashing.ASIDE_MIN)
    parent = hashing.Sha256(aside=True)
    parent.update(memoryview(chunk))
    assert parent.hexdigest() == hashlib.sha256(chunk).hexdigest()
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if the digest is right
        try:
            child = hashing.Sha256(aside=True)
            child.update(memoryview(chunk))
            os._exit(0 if child.hexdigest() == hashlib.sha256(chunk).hexdigest() else 1)
        finally:
            os._exit(2)
    deadline = time.monotonic() + 10
    while (waited := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    if waited == (0, 0):
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child never finished its digest")
    assert os.waitstatus_to_exitcode(waited[1]) == 0
