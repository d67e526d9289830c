"""One verified copy of a payload per deployment, linked into each Component's files/: real
``.mender`` files from ``mender-artifact``, read through the real ``ArtifactPayload``."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestrator_core.artifact import ArtifactPayload, read_header
from orchestrator_core.errors import ArtifactError
from orchestrator_core.shared_payload import SharedPayloads

FILES = {"boot.img": bytes(range(256)) * 64, "app.bin": b"application" * 1000}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("shared-payload")
    argv = ["mender-artifact", "write", "module-image", "-T", "fw", "-t", "board", "-n", "fw-v2",
            "--compression", "none", "-o", str(directory / "fw-v2.mender")]
    for name, data in FILES.items():
        (directory / name).write_bytes(data)
        argv += ["-f", str(directory / name)]
    subprocess.run(argv, check=True, capture_output=True)
    return directory / "fw-v2.mender"


def digest(path: Path) -> str:
    with path.open("rb") as stream:
        return read_header(stream, source_name=str(path)).manifest_digest


@contextmanager
def feed_of(path: Path) -> Iterator[ArtifactPayload]:
    with path.open("rb") as stream:
        yield ArtifactPayload(stream, source_name=str(path), manifest_digest=digest(path),
                              verify_keys=())


def test_the_first_component_reads_the_others_link(artifact: Path, tmp_path: Path) -> None:
    shared = SharedPayloads(tmp_path / "1.shared")
    feeds = []
    for index in range(3):
        files = tmp_path / f"c{index}" / "files"
        files.mkdir(parents=True)
        with feed_of(artifact) as feed:
            shared.store(feed, digest(artifact), files)
        feeds.append(feed)
    assert [feed.consumed for feed in feeds] == [True, False, False]
    inodes = set()
    for index in range(3):
        for name, data in FILES.items():
            path = tmp_path / f"c{index}" / "files" / name
            assert path.read_bytes() == data
            assert stat.S_IMODE(path.stat().st_mode) == 0o400
            inodes.add((name, path.stat().st_ino))
    assert len(inodes) == len(FILES)
    # the copy under its final name, nothing half-made beside it
    assert [p.name for p in (tmp_path / "1.shared").iterdir()] == [
        f"payload-{digest(artifact)}"]


def test_a_file_left_by_an_interrupted_download_is_replaced(
    artifact: Path, tmp_path: Path
) -> None:
    files = tmp_path / "c0" / "files"
    files.mkdir(parents=True)
    (files / "app.bin").write_bytes(b"half")
    with feed_of(artifact) as feed:
        SharedPayloads(tmp_path / "1.shared").store(feed, digest(artifact), files)
    assert (files / "app.bin").read_bytes() == FILES["app.bin"]


def test_where_links_are_refused_each_component_gets_a_copy(
    artifact: Path, tmp_path: Path
) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the temporary directory")
    with tempfile.TemporaryDirectory(dir=other) as shared_root:
        shared = SharedPayloads(Path(shared_root) / "1.shared")  # link(2) fails with EXDEV
        for index in range(2):
            files = tmp_path / f"c{index}" / "files"
            files.mkdir(parents=True)
            with feed_of(artifact) as feed:
                shared.store(feed, digest(artifact), files)
        first, second = (tmp_path / f"c{i}" / "files" / "app.bin" for i in range(2))
        assert first.read_bytes() == second.read_bytes() == FILES["app.bin"]
        assert first.stat().st_ino != second.stat().st_ino
        assert first.stat().st_nlink == 1


def test_a_corrupted_payload_leaves_no_copy_and_fails_each_time(
    artifact: Path, tmp_path: Path
) -> None:
    data = bytearray(artifact.read_bytes())
    data[data.rfind(b"application")] ^= 0xFF
    corrupted = tmp_path / "fw-v2.mender"
    corrupted.write_bytes(bytes(data))
    shared = SharedPayloads(tmp_path / "1.shared")
    for index in range(2):
        files = tmp_path / f"c{index}" / "files"
        files.mkdir(parents=True)
        with feed_of(corrupted) as feed, pytest.raises(ArtifactError, match=r"app\.bin"):
            shared.store(feed, digest(artifact), files)
        assert feed.consumed  # each Component reads (and refuses) it again
    assert os.listdir(tmp_path / "1.shared") == []
