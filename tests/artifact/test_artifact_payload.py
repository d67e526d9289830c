"""The payload feed the engine hands to ``Download``: file by file, the whole ``.mender``
verbatim, or stored into ``files/``; always verified, always readable once."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator_core.artifact import ArtifactPayload, open_payload, read_header
from orchestrator_core.config import Config, load_config
from orchestrator_core.errors import ArtifactError

from . import artifact_builder as ab
from .support import FIXTURES, Made

MakeFeed = Callable[[Path], ArtifactPayload]


@pytest.fixture
def feed_for() -> Iterator[MakeFeed]:
    """Feeds built the way the engine builds one, closed at the end of the test."""
    with contextlib.ExitStack() as streams:

        def make(path: Path) -> ArtifactPayload:
            with open(path, "rb") as stream:
                digest = read_header(stream, source_name=str(path)).manifest_digest
            return ArtifactPayload(
                streams.enter_context(open(path, "rb")),
                source_name=str(path),
                manifest_digest=digest,
                verify_keys=(),
            )

        yield make


@pytest.mark.parametrize("which", ["one", "several", "plain", "rootfs", "empty", "augmented"])
def test_whole_artifact_is_the_file_byte_for_byte(
    made: dict[str, Made], which: str, feed_for: MakeFeed
) -> None:
    path = made[which].path
    feed = feed_for(path)
    assert not feed.consumed
    chunks = list(feed.whole_artifact())
    assert feed.consumed
    assert b"".join(chunks) == path.read_bytes()
    assert max(len(c) for c in chunks) <= 2 << 20  # bounded chunks, not the whole file


def test_whole_artifact_withholds_the_end_of_a_bad_file(tmp_path: Path, feed_for: MakeFeed) -> None:
    files = {"fw.bin": os.urandom(3_000_000)}
    parts = ab.remanifest(ab.build(files, compression=""), {"fw.bin": b"something else"})
    path = tmp_path / "bad.mender"
    path.write_bytes(parts.assemble())
    received = 0
    with pytest.raises(ArtifactError, match=r"data/0000/fw\.bin does not match the manifest"):
        for chunk in feed_for(path).whole_artifact():
            received += len(chunk)
    assert 0 < received < 3_000_000


def test_a_different_artifact_at_download_time_is_refused() -> None:
    with open(FIXTURES / "rtos-v1.mender", "rb") as stream:
        planned = read_header(stream, source_name="rtos-v1.mender").manifest_digest
    with open(FIXTURES / "rtos-v2.mender", "rb") as stream:
        swapped = ArtifactPayload(
            stream,
            source_name="rtos-v2.mender",
            manifest_digest=planned,
            verify_keys=(),
        )
        with pytest.raises(ArtifactError, match="is not the Artifact whose header was checked"):
            next(swapped.files())


def test_save_to_stores_verified_private_files(
    tmp_path: Path, made: dict[str, Made], feed_for: MakeFeed
) -> None:
    feed = feed_for(made["several"].path)
    files_dir = tmp_path / "work" / "files"
    stored = feed.save_to(files_dir)
    assert {p.name: p.read_bytes() for p in stored} == made["several"].files
    assert sorted(p.name for p in files_dir.iterdir()) == sorted(made["several"].files)
    assert stat.S_IMODE(files_dir.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in stored)
    assert feed.consumed


def test_save_to_stores_what_the_interface_left(
    tmp_path: Path, made: dict[str, Made], feed_for: MakeFeed
) -> None:
    feed = feed_for(made["several"].path)
    first = next(feed.files())
    first.read(10)  # an Interface took a little of the first file, then stopped
    stored = feed.save_to(tmp_path / "files")
    assert [p.name for p in stored] == ["notes.txt", "empty.dat"]


def test_a_partly_read_bad_file_is_still_caught(tmp_path: Path, feed_for: MakeFeed) -> None:
    files = {"a.bin": b"a" * 10_000, "b.bin": b"b"}
    parts = ab.remanifest(ab.build(files), {**files, "a.bin": b"x" * 10_000})
    path = tmp_path / "bad.mender"
    path.write_bytes(parts.assemble())
    iterator = feed_for(path).files()
    next(iterator).read(100)
    with pytest.raises(ArtifactError, match=r"data/0000/a\.bin does not match"):
        next(iterator)


def test_payload_is_readable_once(made: dict[str, Made], feed_for: MakeFeed) -> None:
    feed = feed_for(made["one"].path)
    assert [f.name for f in feed.files()] == ["firmware.bin"]
    assert list(feed.files()) == []
    with pytest.raises(ArtifactError, match="its payload was already read"):
        next(feed.whole_artifact())


def test_payload_file_protocol(made: dict[str, Made], feed_for: MakeFeed) -> None:
    feed = feed_for(made["several"].path)
    sizes = {}
    for payload in feed.files():
        sizes[payload.name] = payload.size
        data = payload.read(1000) + payload.read()
        assert data == made["several"].files[payload.name]
        assert payload.read() == b""
    assert sizes == {name: len(d) for name, d in made["several"].files.items()}


def config_for(root: Path, store: Path) -> Config:
    conf = root / "conf"
    conf.mkdir()
    (conf / "mender-orchestrator.conf").write_text(
        json.dumps({"ArtifactSources": [{"Type": "directory", "Path": str(store)}]})
    )
    return load_config(
        {"MENDER_ORCHESTRATOR_CONF_DIR": str(conf), "MENDER_ORCHESTRATOR_DATASTORE_DIR": str(root)}
    )


def test_open_payload_by_path_and_by_name(tmp_path: Path) -> None:
    config = config_for(tmp_path, FIXTURES)
    with open(FIXTURES / "manifest-v1.mender", "rb") as stream:
        digest = read_header(stream, source_name="x").manifest_digest
    expected = {"manifest-v1.yaml": (FIXTURES / "manifest-v1.yaml").read_bytes()}
    path = str(FIXTURES / "manifest-v1.mender")
    for name, where in (("system-core-v1", path), ("system-core-v1", None)):
        with open_payload(name, where, digest, config) as feed:
            assert {f.name: f.read() for f in feed.files()} == expected


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from orchestrator_core.artifact import ArtifactPayload, read_header
from orchestrator_core.errors import ArtifactError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
path, files = Path(sys.argv[1]), Path(sys.argv[2])
digest = read_header(path.open("rb"), source_name=str(path)).manifest_digest
with path.open("rb") as stream:
    feed = ArtifactPayload(stream, source_name=str(path), manifest_digest=digest, verify_keys=())
    try:
        feed.save_to(files)
    except ArtifactError as exc:
        print(exc.message)
"""


def test_save_to_a_full_disk_fails_cleanly(tmp_path: Path, made: dict[str, Made]) -> None:
    files = tmp_path / "files"
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(made["several"].path), str(files)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout == f"cannot store payload file firmware.bin in {files}: File too large\n"
    assert list(files.iterdir()) == []  # no partial file left behind
