"""The Artifacts cache: fill while reading, one fill for concurrent requesters, size limit
with oldest-first eviction, prune, and what happens when the cache cannot hold an Artifact
(too large, disk full)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from orchestrator_core.artifact import (
    ArtifactsCache,
    CacheStream,
    open_artifact,
    open_payload,
    read_header,
)
from orchestrator_core.artifact.cache import entry_file_name
from orchestrator_core.config import CacheConfig, Config, load_config
from orchestrator_core.errors import ArtifactError, ConfigError

from . import artifact_builder as ab
from .artifact_server import ArtifactServer
from .support import FIXTURES, Keys

REPO = Path(__file__).resolve().parents[2]


def cache_at(path: Path, max_size: int = 0) -> ArtifactsCache:
    path.mkdir(exist_ok=True)
    return ArtifactsCache(CacheConfig(True, path, max_size))


class Opener:
    """Opens ``data`` as a source would, counting the calls."""

    def __init__(self, data: bytes, path: Path | None = None) -> None:
        self.data = data
        self.path = path  # a real file gives the cache a size to check up front
        self.calls = 0

    def __call__(self) -> tuple[BinaryIO, str]:
        self.calls += 1
        if self.path is not None:
            return open(self.path, "rb"), str(self.path)
        return io.BytesIO(self.data), "memory"


def config_with_sources(tmp_path: Path, *sources: dict[str, str]) -> Config:
    """A configuration read from ``tmp_path/conf``, with these ``ArtifactSources``."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "mender-orchestrator.conf").write_text(json.dumps({"ArtifactSources": list(sources)}))
    return load_config(
        {
            "MENDER_ORCHESTRATOR_CONF_DIR": str(conf),
            "MENDER_ORCHESTRATOR_DATASTORE_DIR": str(tmp_path),
        }
    )


def filling(stream: BinaryIO) -> CacheStream:
    assert isinstance(stream, CacheStream)
    return stream


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_disabled_cache_just_opens(tmp_path: Path) -> None:
    cache = ArtifactsCache(CacheConfig(False, tmp_path / "does-not-matter", 0))
    opener = Opener(b"abc")
    for _ in range(2):
        stream, where = cache.open("x", opener)
        with stream:
            assert (stream.read(), where) == (b"abc", "memory")
    assert opener.calls == 2
    assert cache.prune(set()) == []


def test_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"ArtifactsCache.Path {tmp_path}/nope does not exist"):
        ArtifactsCache(CacheConfig(True, tmp_path / "nope", 0))


def test_entry_is_stored_only_once_read_to_the_end(tmp_path: Path) -> None:
    cache = cache_at(tmp_path / "cache")
    data = os.urandom(3_000_000)
    opener = Opener(data)
    stream, _ = cache.open("big", opener)
    first = stream.read(1_000_000)
    names = entries(tmp_path / "cache")
    assert len(names) == 1 and names[0].endswith(".partial")  # never under the entry's name
    rest = stream.read()
    assert first + rest == data
    assert len(entries(tmp_path / "cache")) == 1  # still partial: nobody vouched for it yet
    filling(stream).confirm_verified()
    stream.close()
    assert entries(tmp_path / "cache") == ["big.mender"]
    again, where = cache.open("big", opener)
    with again:
        assert again.read() == data
    assert where == f"{tmp_path / 'cache' / 'big.mender'} (cached copy of big)"
    assert opener.calls == 1


def test_reader_stopping_early_or_not_confirming_leaves_nothing(tmp_path: Path) -> None:
    cache = cache_at(tmp_path / "cache")
    stream, _ = cache.open("big", Opener(os.urandom(100_000)))
    stream.read(10)
    with pytest.raises(RuntimeError, match="only stored once its source was read to the end"):
        filling(stream).confirm_verified()
    stream.close()
    assert entries(tmp_path / "cache") == []
    stream, _ = cache.open("big", Opener(os.urandom(100_000)))
    stream.read()
    stream.close()  # read to the end, but the reader found something wrong
    assert entries(tmp_path / "cache") == []


def test_entry_names_are_never_paths() -> None:
    assert entry_file_name("rtos-v1") == "rtos-v1.mender"
    assert entry_file_name("../../etc/passwd").startswith("sha256-")
    assert entry_file_name("a/b") == "a%2Fb.mender"
    assert entry_file_name(".hidden").startswith("sha256-")
    assert entry_file_name("x" * 500).startswith("sha256-")


def test_same_thread_asking_again_during_its_fill_is_refused(tmp_path: Path) -> None:
    cache = cache_at(tmp_path / "cache")
    stream, _ = cache.open("a", Opener(b"abc"))
    with pytest.raises(RuntimeError, match="already filling"):
        cache.open("a", Opener(b"abc"))
    stream.close()


# --------------------------------------------------------------------------- concurrency


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    srv = ArtifactServer()
    srv.behaviour.files["/rtos-v1.mender"] = (FIXTURES / "rtos-v1.mender").read_bytes()
    yield srv
    srv.close()


def test_concurrent_requesters_share_one_download(tmp_path: Path, server: ArtifactServer) -> None:
    config = config_with_sources(
        tmp_path, {"Type": "url", "Template": server.url("/{artifact_name}.mender")}
    )
    cache = cache_at(tmp_path / "cache")
    started = threading.Event()
    results: dict[str, tuple[bytes, str]] = {}

    def first() -> None:
        stream, where = cache.open("rtos-v1", lambda: open_artifact("rtos-v1", None, config))
        started.set()
        chunks = []
        while chunk := stream.read(512):
            chunks.append(chunk)
            time.sleep(0.01)  # a slow Interface: the others must wait, not download again
        filling(stream).confirm_verified()
        stream.close()
        results["first"] = (b"".join(chunks), where)

    def other(name: str) -> None:
        started.wait()
        stream, where = cache.open("rtos-v1", lambda: open_artifact("rtos-v1", None, config))
        with stream:
            results[name] = (stream.read(), where)

    threads = [threading.Thread(target=first)]
    threads += [threading.Thread(target=other, args=(f"other{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    expected = (FIXTURES / "rtos-v1.mender").read_bytes()
    assert {name: data == expected for name, (data, _) in results.items()} == {
        "first": True,
        "other0": True,
        "other1": True,
        "other2": True,
    }
    assert results["first"][1] == server.url("/rtos-v1.mender")
    assert all("cached copy" in results[f"other{i}"][1] for i in range(3))
    assert len(server.behaviour.seen) == 1


def test_waiter_fills_again_when_the_first_fill_fails(tmp_path: Path) -> None:
    cache = cache_at(tmp_path / "cache")
    opener = Opener(os.urandom(50_000))
    stream, _ = cache.open("a", opener)
    stream.read(100)
    got: list[bytes] = []

    def wait_and_read() -> None:
        stream, _ = cache.open("a", opener)
        with stream:
            got.append(stream.read())

    waiter = threading.Thread(target=wait_and_read)
    waiter.start()
    time.sleep(0.1)
    assert waiter.is_alive()  # waiting for the first fill
    stream.close()  # the first reader gives up
    waiter.join(timeout=10)
    assert got == [opener.data]
    assert opener.calls == 2


# --------------------------------------------------------------------------- size limit


def fill(cache: ArtifactsCache, name: str, data: bytes, path: Path | None = None) -> None:
    stream, _ = cache.open(name, Opener(data, path))
    with stream:
        assert stream.read() == data
        filling(stream).confirm_verified()


def test_oldest_entries_are_evicted_first(tmp_path: Path) -> None:
    cache = cache_at(tmp_path / "cache", max_size=25_000)
    for age, name in enumerate(("old", "newer")):
        fill(cache, name, bytes(10_000))
        os.utime(tmp_path / "cache" / f"{name}.mender", (1000 + age, 1000 + age))
    fill(cache, "new", bytes(10_000))
    assert entries(tmp_path / "cache") == ["new.mender", "newer.mender"]


def test_using_an_entry_makes_it_young(tmp_path: Path) -> None:
    cache = cache_at(tmp_path / "cache", max_size=25_000)
    for age, name in enumerate(("a", "b")):
        fill(cache, name, bytes(10_000))
        os.utime(tmp_path / "cache" / f"{name}.mender", (1000 + age, 1000 + age))
    cache.open("a", Opener(b""))[0].close()  # a is used again
    fill(cache, "c", bytes(10_000))
    assert entries(tmp_path / "cache") == ["a.mender", "c.mender"]


def test_too_large_for_the_cache_streams_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = cache_at(tmp_path / "cache", max_size=5_000)
    fill(cache, "small", bytes(4_000))
    data = os.urandom(20_000)
    (tmp_path / "big.mender").write_bytes(data)
    with caplog.at_level(logging.WARNING):
        fill(cache, "big", data, tmp_path / "big.mender")  # known size: given up at once
        fill(cache, "unknown-size", data)  # found out while filling
    assert entries(tmp_path / "cache") == ["small.mender"]
    assert (
        "ArtifactsCache: Artifact big cannot be cached: it needs 20000 bytes and "
        "ArtifactsCache.MaxSizeBytes is 5000" in caplog.text
    )
    assert "reading on from the source without the cache" in caplog.text


def test_too_large_fails_when_the_copy_is_required(tmp_path: Path) -> None:
    cache = cache_at(tmp_path / "cache", max_size=5_000)
    (tmp_path / "big.mender").write_bytes(bytes(20_000))
    stream, _ = cache.open("big", Opener(b"", tmp_path / "big.mender"))
    assert isinstance(stream, CacheStream)
    stream.require_cached()
    with stream, pytest.raises(ArtifactError, match="big cannot be cached: it needs 20000 bytes"):
        stream.read()
    assert entries(tmp_path / "cache") == []


DISK_FULL = """
import resource, signal, sys, logging
from pathlib import Path
from orchestrator_core.artifact import ArtifactsCache
from orchestrator_core.config import CacheConfig
from orchestrator_core.errors import ArtifactError
logging.basicConfig(level=logging.WARNING, format="%(message)s")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
cache = ArtifactsCache(CacheConfig(True, Path(sys.argv[1]), 0))
source = Path(sys.argv[2])
stream, _ = cache.open("big", lambda: (open(source, "rb"), str(source)))
if sys.argv[3] == "required":
    stream.require_cached()
try:
    data = stream.read()
except ArtifactError as exc:
    print("error:", exc.message)
else:
    stream.confirm_verified()
    print("read", len(data), data == source.read_bytes())
stream.close()
"""


@pytest.mark.parametrize("mode", ["streaming", "required"])
def test_disk_full_while_filling(tmp_path: Path, mode: str) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "big.mender").write_bytes(os.urandom(1_000_000))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            DISK_FULL,
            str(tmp_path / "cache"),
            str(tmp_path / "big.mender"),
            mode,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    problem = "Artifact big cannot be cached: writing to"
    if mode == "streaming":
        assert done.stdout == "read 1000000 True\n"
        assert problem in done.stderr and "File too large" in done.stderr
    else:
        assert done.stdout.startswith(f"error: ArtifactsCache: {problem}")
    assert entries(tmp_path / "cache") == []


# --------------------------------------------------------------------------- prune


def test_prune_keeps_only_what_the_deployment_used(tmp_path: Path) -> None:
    cache = cache_at(tmp_path / "cache")
    for name in ("a", "b", "c/with/slashes"):
        fill(cache, name, b"x")
    (tmp_path / "cache" / ".b.mender.crashed.partial").write_bytes(b"half")
    removed = cache.prune({"a", "c/with/slashes"})
    assert sorted(removed) == [".b.mender.crashed.partial", "b.mender"]
    assert entries(tmp_path / "cache") == ["a.mender", "c%2Fwith%2Fslashes.mender"]


# --------------------------------------------------------------------------- with the feed


def test_payload_through_the_cache_and_a_stale_entry(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    files = {"fw.bin": os.urandom(10_000)}
    (store / "py-artifact.mender").write_bytes(ab.build(files).assemble())
    config = config_with_sources(tmp_path, {"Type": "directory", "Path": str(store)})
    cache = cache_at(tmp_path / "cache")
    # an earlier deployment left another Artifact of the same name in the cache
    (tmp_path / "cache" / "py-artifact.mender").write_bytes(ab.build({"fw.bin": b"old"}).assemble())
    stream, _ = open_artifact("py-artifact", None, config)
    with stream:
        digest = read_header(stream, source_name="x").manifest_digest
    with open_payload("py-artifact", None, digest, config, cache) as feed:
        assert {f.name: f.read() for f in feed.files()} == files
    assert (tmp_path / "cache" / "py-artifact.mender").read_bytes() == (
        store / "py-artifact.mender"
    ).read_bytes()
    with open_payload("py-artifact", None, digest, config, cache) as feed:
        saved = feed.save_to(tmp_path / "work" / "files")
    assert [p.read_bytes() for p in saved] == [files["fw.bin"]]


def test_a_download_that_fails_verification_is_not_kept(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    files = {"fw.bin": os.urandom(10_000)}
    tampered = ab.remanifest(ab.build(files), {"fw.bin": b"what the manifest promised"})
    (store / "py-artifact.mender").write_bytes(tampered.assemble())
    config = config_with_sources(tmp_path, {"Type": "directory", "Path": str(store)})
    cache = cache_at(tmp_path / "cache")
    with open(store / "py-artifact.mender", "rb") as stream:
        digest = read_header(stream, source_name="x").manifest_digest
    with open_payload("py-artifact", None, digest, config, cache) as feed:
        with pytest.raises(ArtifactError, match=r"fw\.bin does not match"):
            feed.save_to(tmp_path / "files")
    assert entries(tmp_path / "cache") == []


def plant(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
        (path / "inside").write_bytes(b"x")
    else:
        os.symlink("/dev/zero", path)  # a device: endless zeros


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_a_non_regular_file_under_an_artifacts_name_is_a_miss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    cache = cache_at(tmp_path / "cache", max_size=1_000_000)
    planted = tmp_path / "cache" / "x.mender"
    plant(planted, kind)
    opener = Opener(b"the artifact")
    outcome: list[bytes] = []

    def read() -> None:
        stream, where = cache.open("x", opener)
        with stream:
            outcome.append(stream.read())
            filling(stream).confirm_verified()

    reader = threading.Thread(target=read, daemon=True)
    with caplog.at_level(logging.WARNING):
        reader.start()
        reader.join(10)  # a FIFO opened for reading would wait for a writer forever
    assert not reader.is_alive()
    assert outcome == [b"the artifact"] and opener.calls == 1
    assert f"ArtifactsCache: {planted} is a " in caplog.text
    assert "not a regular file; not using it" in caplog.text
    if kind != "directory":  # replaced by the real entry
        assert planted.read_bytes() == b"the artifact"
    assert cache.prune(set()) == ([] if kind == "directory" else ["x.mender"])


def test_a_cached_copy_with_a_bad_signature_is_evicted_and_fetched_again(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    files = {"fw.bin": os.urandom(10_000)}
    good = ab.build(files, sign=keys.sign_ed25519)
    (store / "py-artifact.mender").write_bytes(good.assemble())
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "mender-orchestrator.conf").write_text(json.dumps({
        "ArtifactSources": [{"Type": "directory", "Path": str(store)}],
        "ArtifactVerifyKey": str(keys.ed25519_public),
    }))
    config = load_config({"MENDER_ORCHESTRATOR_CONF_DIR": str(conf),
                          "MENDER_ORCHESTRATOR_DATASTORE_DIR": str(tmp_path)})
    cache = cache_at(tmp_path / "cache")
    # the same Artifact, signed by a key this System does not trust
    entry = tmp_path / "cache" / "py-artifact.mender"
    entry.write_bytes(ab.resign(good, keys.sign_rsa_other).assemble())
    digest = read_header(io.BytesIO(good.assemble()), source_name="x").manifest_digest
    with caplog.at_level(logging.WARNING):
        with open_payload("py-artifact", None, digest, config, cache) as feed:
            assert {f.name: f.read() for f in feed.files()} == files
    assert "ArtifactsCache: the cached copy of py-artifact fails verification (" in caplog.text
    assert "signature" in caplog.text
    assert entry.read_bytes() == (store / "py-artifact.mender").read_bytes()
