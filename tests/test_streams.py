"""Download through the streams tree, with real shell-script Interfaces reading real FIFOs.

The payload comes from ``DirFeed``, a small PayloadFeed over files in tmp_path that checks a
SHA-256 per file the way the Artifact reader does (the real reader is exercised at the end
with ``.mender`` files written by ``mender-artifact``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import shutil
import stat
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from systems import FIXTURES

from orchestrator_core import drivers, spawns, streams
from orchestrator_core.artifact import ArtifactPayload, hashing, read_header
from orchestrator_core.context import ArtifactInfo, Component, InterfaceContext
from orchestrator_core.errors import ArtifactError, InterfaceError, InterfaceTimeout

RECORDER = Path(__file__).parent / "interfaces" / "recorder"
INTERFACE = "rtos-interface"


class _File:
    def __init__(self, path: Path, name: str, digest: str) -> None:
        self.name = name
        self.size = path.stat().st_size
        self._stream = path.open("rb")
        self._hash = hashlib.sha256()
        self._digest = digest

    def read(self, n: int = -1, /) -> bytes:
        if self._stream.closed:
            return b""
        data = self._stream.read(n)
        self._hash.update(data)
        if not data or self._stream.tell() == self.size:
            self._stream.close()
            if self._hash.hexdigest() != self._digest:
                raise ArtifactError(f"payload file {self.name}: checksum mismatch")
        return data


class DirFeed:
    """Payload files (and the whole Artifact) from plain files; ``bad`` files fail their check."""

    def __init__(
        self,
        files: list[tuple[str, Path]],
        whole: Path | None = None,
        bad: frozenset[str] = frozenset(),
    ) -> None:
        self._files = files
        self._whole = whole
        self._bad = bad
        self._consumed = False

    @property
    def consumed(self) -> bool:
        return self._consumed

    def files(self) -> Iterator[_File]:
        self._consumed = True
        for name, path in self._files:
            with path.open("rb") as stream:
                digest = hashlib.file_digest(stream, "sha256").hexdigest()
            yield _File(path, name, "0" * 64 if name in self._bad else digest)

    def whole_artifact(self) -> Iterator[bytes]:
        self._consumed = True
        assert self._whole is not None
        with self._whole.open("rb") as stream:
            while chunk := stream.read(1 << 16):
                yield chunk


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEST_INTERFACE_DIR", str(tmp_path))
    interfaces = tmp_path / "data" / "interfaces" / "v1"
    interfaces.mkdir(parents=True)
    (interfaces / INTERFACE).symlink_to(RECORDER)
    (tmp_path / "work").mkdir(mode=0o700)
    return tmp_path


def behave(env: Path, state: str, script: str) -> None:
    path = env / "behaviour" / "all" / state
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)


def states(env: Path) -> list[str]:
    return [line.split("\t")[1] for line in (env / "calls.log").read_text().splitlines()]


def payload(env: Path, sizes: dict[str, int]) -> list[tuple[str, Path]]:
    source = env / "payload"
    source.mkdir(exist_ok=True)
    files = []
    for name, size in sizes.items():
        path = source / name
        path.write_bytes(os.urandom(size))
        files.append((name, path))
    return files


def download(
    env: Path, feed: object, timeout: float = 20.0, name: str = "rtos-v2"
) -> InterfaceContext:
    component = Component("rtos", INTERFACE, ("c1",))
    driver = drivers.load(component, env / "data")
    ctx = driver.context(
        log=logging.getLogger("test.streams"),
        timeout_seconds=timeout,
        component_id="c1",
        work_dir=env / "work",
        artifact=ArtifactInfo(name=name, group=None, payload_type=INTERFACE),
        payload=feed,
    )
    try:
        driver.run_state("download", ctx)
    finally:
        left = set(os.listdir(env / "work")) & {"stream-next", "streams"}
        assert not left, "the streams tree must be removed"
    return ctx


def received(env: Path, name: str) -> bytes:
    return (env / "received" / "c1" / name).read_bytes()


# --------------------------------------------------------------------------- well-behaved


def test_every_payload_file_is_streamed_in_order(env: Path) -> None:
    files = payload(env, {"image.bin": 3 << 20, "empty": 0, "meta.json": 100})
    feed = DirFeed(files)
    download(env, feed)
    assert states(env) == ["NeedsUnpackedArtifact", "ProvidePayloadFileSizes", "Download"]
    assert (env / "received" / "c1" / "lines").read_text().splitlines() == [
        "streams/image.bin",
        "streams/empty",
        "streams/meta.json",
    ]
    for name, path in files:
        assert received(env, name) == path.read_bytes()
    assert feed.consumed


def test_each_fifo_is_opened_when_the_interface_opens_it_not_retried(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry loop adds its pause to every stream (and, on two cores, its wake-ups slow the
    Interface); the writer waits in ``open`` instead, so each FIFO it serves is opened once
    per use. The Interface sleeps before each open, so a retry loop would have retried."""
    work = env / "work"
    opens: list[tuple[str, bool]] = []
    real_open = os.open

    def recording_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if isinstance(path, (str, Path)) and Path(path).parent in (work, work / "streams"):
            if flags & os.O_WRONLY:
                opens.append((Path(path).relative_to(work).as_posix(), bool(flags & os.O_NONBLOCK)))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", recording_open)
    behave(env, "Download", 'sleep 0.2\nwhile read -r stream <stream-next && [ -n "$stream" ]; do\n'
           '  sleep 0.2; cat "$stream" >"$DIR/$(basename "$stream")"; sleep 0.2\ndone\n')
    files = payload(env, {"a.bin": 1000, "b.bin": 2000})
    download(env, DirFeed(files), timeout=30)
    for name, path in files:
        assert (env / name).read_bytes() == path.read_bytes()
    # only stream-next is ever opened without blocking: the caller's two tries before the
    # writer starts (a quick Interface that exits costs no thread), and the out-of-order probes
    blocking = [name for name, nonblocking in opens if not nonblocking]
    assert blocking == ["stream-next", "streams/a.bin", "stream-next", "streams/b.bin",
                        "stream-next"]
    polled = [name for name, nonblocking in opens if nonblocking]
    assert not [name for name in polled if name.startswith("streams/")]


@pytest.mark.parametrize("leftover", [["stream-next"], ["streams"], ["stream-next", "streams"]])
def test_a_streams_tree_left_by_an_interrupted_download_is_replaced(
    env: Path, leftover: list[str]
) -> None:
    for name in leftover:
        if name == "stream-next":
            os.mkfifo(env / "work" / name)
        else:
            (env / "work" / name).mkdir()
            (env / "work" / name / "image.bin").write_bytes(b"stale")
    files = payload(env, {"image.bin": 1000})
    download(env, DirFeed(files))
    assert received(env, "image.bin") == files[0][1].read_bytes()


def test_download_with_file_sizes(env: Path) -> None:
    behave(env, "ProvidePayloadFileSizes", "echo Yes")
    files = payload(env, {"a.img": 70000, "b": 1})
    download(env, DirFeed(files))
    assert states(env) == [
        "NeedsUnpackedArtifact",
        "ProvidePayloadFileSizes",
        "DownloadWithFileSizes",
    ]
    assert (env / "received" / "c1" / "lines").read_text().splitlines() == [
        "streams/a.img 70000",
        "streams/b 1",
    ]
    assert received(env, "a.img") == files[0][1].read_bytes()


@pytest.mark.parametrize("sizes", ["Yes", "No"])
def test_whole_artifact_as_one_stream(env: Path, sizes: str) -> None:
    behave(env, "NeedsUnpackedArtifact", "echo No")
    behave(env, "ProvidePayloadFileSizes", f"echo {sizes}")
    whole = env / "rtos-v2.mender"
    whole.write_bytes(os.urandom(200_000))
    feed = DirFeed([], whole=whole)
    download(env, feed)
    # asked whatever NeedsUnpackedArtifact answered; the whole Artifact has no sizes to give
    assert states(env) == ["NeedsUnpackedArtifact", "ProvidePayloadFileSizes", "Download"]
    assert (env / "received" / "c1" / "lines").read_text() == "streams/rtos-v2.mender\n"
    assert received(env, "rtos-v2.mender") == whole.read_bytes()
    assert feed.consumed


def test_no_payload_files_ends_the_streams_at_once(env: Path) -> None:
    behave(env, "Download", 'line="$(cat stream-next)"; echo "[$line]" > "$DIR/seen"')
    download(env, DirFeed([]))
    assert (env / "seen").read_text() == "[]\n"


# quick, or slow enough that a writer thread waits for stream-next and is released at the exit
@pytest.mark.parametrize("first", ["", "sleep 0.3; "])
def test_an_interface_that_does_not_read_leaves_the_payload_unconsumed(
    env: Path, first: str
) -> None:
    behave(
        env,
        "Download",
        first + 'ls -A > "$DIR/ls"; stat -c %F stream-next > "$DIR/kind"; '
        'stat -c %i streams > "$DIR/inode"; exit 0',
    )
    feed = DirFeed(payload(env, {"image.bin": 10}))
    download(env, feed)
    assert not feed.consumed
    assert (env / "ls").read_text().split() == ["stream-next", "streams"]
    assert (env / "kind").read_text() == "fifo\n"
    # the empty streams/ became files/, where the engine stores the payload: no new inode
    files = env / "work" / "files"
    assert os.stat(files).st_ino == int((env / "inode").read_text())
    assert os.listdir(files) == []
    assert stat.S_IMODE(os.stat(files).st_mode) == 0o700


def test_an_interface_that_streams_leaves_no_files_directory(env: Path) -> None:
    files = payload(env, {"image.bin": 1000})
    download(env, DirFeed(files))
    assert received(env, "image.bin") == files[0][1].read_bytes()
    assert sorted(os.listdir(env / "work")) == []


@pytest.mark.parametrize("stale", ["files", "streams"])
def test_streams_is_removed_not_renamed_when_it_or_files_is_not_empty(
    env: Path, stale: str
) -> None:
    """What is in streams/ was not put there by us; a files/ already holding files is not
    replaced: in both cases streams/ goes as before."""
    if stale == "files":
        (env / "work" / "files").mkdir()
        (env / "work" / "files" / "old.bin").write_bytes(b"old")
        behave(env, "Download", "exit 0")
    else:
        behave(env, "Download", "echo junk > streams/junk; exit 0")
    feed = DirFeed(payload(env, {"image.bin": 10}))
    download(env, feed)
    assert not feed.consumed
    if stale == "files":
        assert os.listdir(env / "work" / "files") == ["old.bin"]
    else:
        assert not (env / "work" / "files").exists()


def test_streaming_memory_is_bounded(env: Path) -> None:
    behave(env, "Download", 'line="$(cat stream-next)"; cat "$line" > /dev/null; cat stream-next')
    big = env / "big"
    with big.open("wb") as out:
        out.truncate(96 << 20)
    tracemalloc.start()
    try:
        download(env, DirFeed([("big", big)]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak traced memory {peak} bytes for a 96 MiB payload"


def test_the_reader_loop_shown_in_the_docs(env: Path) -> None:
    docs = (Path(__file__).parents[1] / "docs" / "exec-driver.md").read_text()
    loop = docs.split("```sh\n", 1)[1].split("```", 1)[0]
    behave(env, "DownloadWithFileSizes", loop + 'cp -r tmp "$DIR/staged"\n')
    (env / "work" / "tmp").mkdir()
    behave(env, "ProvidePayloadFileSizes", "echo Yes")
    files = payload(env, {"a.bin": 100_000, "b.bin": 5})
    download(env, DirFeed(files))
    for name, path in files:
        assert (env / "staged" / name).read_bytes() == path.read_bytes()


def test_a_child_forked_while_stream_next_was_open_does_not_end_the_streams(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread's child holds a copy of the announcement's pipe end until it execs:
    the Interface's next open of stream-next must not meet that copy (and read an end)."""
    write = streams.StreamServer._write
    slow_starts: list[threading.Thread] = []

    def write_and_fork(self: streams.StreamServer, fd: int, data: object, what: str,
                       offset: int = 0) -> None:
        if what == "stream-next" and not slow_starts:
            start = spawns.starting()
            start.__enter__()
            pid = os.fork()  # as another Component's Interface start would, mid-announcement
            if pid == 0:
                time.sleep(1.0)  # a start slow to exec on a loaded machine
                os._exit(0)

            def finish() -> None:
                os.waitpid(pid, 0)
                start.__exit__(None, None, None)

            slow_starts.append(threading.Thread(target=finish))
            slow_starts[0].start()
        write(self, fd, data, what, offset)  # type: ignore[arg-type]

    open_fifo = streams.StreamServer._open

    def open_once_the_child_is_gone(self: streams.StreamServer, path: Path) -> int:
        # the copy closing while the Interface waits in its read is what ends the streams early
        if path == self.stream_next and slow_starts:
            slow_starts[0].join()
        return open_fifo(self, path)

    monkeypatch.setattr(streams.StreamServer, "_write", write_and_fork)
    monkeypatch.setattr(streams.StreamServer, "_open", open_once_the_child_is_gone)
    behave(env, "Download", 'while read -r stream <stream-next && [ -n "$stream" ]; do\n'
           '  cat "$stream" >"$DIR/$(basename "$stream")"\ndone\n')
    files = payload(env, {"first.bin": 10, "second.bin": 10})
    download(env, DirFeed(files))
    slow_starts[0].join()
    for name, path in files:
        assert (env / name).read_bytes() == path.read_bytes()


def test_parallel_components_stream_side_by_side(env: Path) -> None:
    # the engine runs a group's Downloads in threads: no pipe end may leak between them
    files = {key: payload(env, {f"{key}.bin": 2 << 20}) for key in ("c1", "c2", "c3")}
    errors: list[BaseException] = []

    def one(key: str) -> None:
        work = env / "work" / key
        work.mkdir(mode=0o700)
        driver = drivers.load(Component("rtos", INTERFACE, (key,)), env / "data")
        ctx = driver.context(
            log=logging.getLogger("test.streams"),
            timeout_seconds=20,
            component_id=key,
            work_dir=work,
            payload=DirFeed(files[key]),
        )
        try:
            driver.run_state("download", ctx)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(key,)) for key in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for key, [(name, path)] in files.items():
        assert (env / "received" / key / name).read_bytes() == path.read_bytes()


# --------------------------------------------------------------------------- misbehaving


def test_stopping_mid_stream_fails_without_waiting_for_the_timeout(env: Path) -> None:
    behave(
        env, "Download", 'line="$(cat stream-next)"; head -c 1000 "$line" > /dev/null; sleep 300'
    )
    feed = DirFeed(payload(env, {"image.bin": 4 << 20}))
    started = time.monotonic()
    with pytest.raises(InterfaceError) as raised:
        download(env, feed, timeout=30)
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert message.startswith(f"rtos/c1 (interface {INTERFACE}): Download failed: ")
    assert "the Interface stopped reading streams/image.bin after" in message
    assert "(it closed the pipe)" in message


def test_a_stream_opened_but_never_read_ends_at_the_timeout(env: Path) -> None:
    behave(env, "Download", 'line="$(cat stream-next)"; exec 3<"$line"; sleep 300')
    feed = DirFeed(payload(env, {"image.bin": 4 << 20}))
    started = time.monotonic()
    with pytest.raises(InterfaceTimeout) as raised:
        download(env, feed, timeout=1.5)
    assert time.monotonic() - started < 4
    message = str(raised.value)
    assert "Download ran longer than InterfaceTimeoutSeconds (1.5 s)" in message
    assert "waiting for the Interface to read streams/image.bin (" in message
    assert re.search(r"streams/image\.bin \(\d+ of 4194304 bytes written\)", message)


def test_reading_stream_next_out_of_order_fails(env: Path) -> None:
    behave(
        env,
        "Download",
        'cat stream-next > "$DIR/first"; sleep 0.3; cat stream-next > "$DIR/second"; exit 0',
    )
    feed = DirFeed(payload(env, {"a": 10, "b": 10}))
    started = time.monotonic()
    with pytest.raises(InterfaceError) as raised:
        download(env, feed, timeout=30)
    assert time.monotonic() - started < 5
    assert (env / "first").read_text() == "streams/a\n"
    assert (env / "second").read_text() == ""  # it was given an end of file, not stream b
    assert str(raised.value) == (
        f"rtos/c1 (interface {INTERFACE}): Download exited with status 0 without reading every "
        "payload stream: it exited while the orchestrator was waiting for the Interface to "
        "read streams/a, but it read stream-next again instead (each stream must be read to "
        "its end, in order)"
    )


def test_reading_stream_next_out_of_order_then_hanging_is_named_at_the_timeout(env: Path) -> None:
    behave(env, "Download", "cat stream-next; sleep 0.3; cat stream-next; sleep 300")
    with pytest.raises(InterfaceTimeout) as raised:
        download(env, DirFeed(payload(env, {"a": 10})), timeout=1.5)
    assert str(raised.value).endswith(
        "streaming the payload was waiting for the Interface to read streams/a, but it read "
        "stream-next again instead (each stream must be read to its end, in order); "
        "it wrote nothing on stderr"
    )


def test_stopping_after_some_streams_fails(env: Path) -> None:
    behave(env, "Download", 'line="$(cat stream-next)"; cat "$line" > /dev/null; exit 0')
    feed = DirFeed(payload(env, {"a": 10, "b": 10}))
    with pytest.raises(InterfaceError) as raised:
        download(env, feed)
    assert str(raised.value).endswith(
        "without reading every payload stream: it exited while the orchestrator was waiting "
        "for the Interface to open stream-next again"
    )


def test_a_failing_download_reports_its_status_and_where_streaming_stood(env: Path) -> None:
    behave(env, "Download", 'cat stream-next > /dev/null; echo "no space left" >&2; exit 2')
    feed = DirFeed(payload(env, {"a": 10}))
    with pytest.raises(InterfaceError) as raised:
        download(env, feed)
    message = str(raised.value)
    assert (
        "Download failed: it exited with status 2; streaming the payload was waiting for "
        in message
    )
    assert "the Interface to open streams/a" in message
    assert message.endswith("its last lines on stderr: no space left")


def test_a_hang_before_stream_next_is_a_timeout_and_leaves_the_payload(env: Path) -> None:
    behave(env, "Download", "sleep 300")
    feed = DirFeed(payload(env, {"a": 10}))
    with pytest.raises(InterfaceTimeout, match="waiting for the Interface to open stream-next"):
        download(env, feed, timeout=1)
    assert not feed.consumed


def test_a_checksum_error_fails_download_and_stops_the_interface(env: Path) -> None:
    files = payload(env, {"a": 1000, "b": 3 << 20, "c": 10})
    feed = DirFeed(files, bad=frozenset({"b"}))
    started = time.monotonic()
    with pytest.raises(ArtifactError) as raised:
        download(env, feed, timeout=30)
    assert time.monotonic() - started < 5
    assert str(raised.value) == (
        f"rtos/c1 (interface {INTERFACE}): Download failed: payload file b: checksum mismatch"
    )
    assert not (env / "received" / "c1" / "c").exists()


def test_a_payload_name_that_would_escape_is_refused(env: Path) -> None:
    files = payload(env, {"x": 10})
    feed = DirFeed([("../escape", files[0][1])])
    with pytest.raises(ArtifactError, match=r"'\.\./escape' contains a path separator"):
        download(env, feed)
    assert not (env / "escape").exists()


# --------------------------------------------------------------------------- real Artifacts

needs_mender_artifact = pytest.mark.skipif(
    shutil.which("mender-artifact") is None, reason="needs Debian's mender-artifact"
)


def write_artifact(env: Path, files: list[tuple[str, Path]], compression: str = "gzip") -> Path:
    artifact = env / f"rtos-v2-{compression}.mender"
    command = [
        "mender-artifact", "write", "module-image",
        "--type", INTERFACE, "--device-type", "rtos", "--artifact-name", "rtos-v2",
        "--provides", f"rootfs-image.{INTERFACE}.version:rtos-v2",
        "--compression", compression, "--output-path", str(artifact),
    ]  # fmt: skip
    for _, path in files:
        command += ["--file", str(path)]
    subprocess.run(command, check=True, capture_output=True)
    return artifact


@contextlib.contextmanager
def real_feed(artifact: Path) -> Iterator[ArtifactPayload]:
    with artifact.open("rb") as stream:
        digest = read_header(stream, source_name=str(artifact)).manifest_digest
    with artifact.open("rb") as stream:
        yield ArtifactPayload(
            stream, source_name=str(artifact), manifest_digest=digest, verify_keys=()
        )


@needs_mender_artifact
@pytest.mark.parametrize("compression", ["gzip", "lzma", "none"])
def test_a_real_artifact_streams_file_by_file(env: Path, compression: str) -> None:
    behave(env, "ProvidePayloadFileSizes", "echo Yes")
    files = payload(env, {"firmware.bin": 2 << 20, "notes.txt": 300})
    artifact = write_artifact(env, files, compression)
    with real_feed(artifact) as feed:
        download(env, feed)
    assert (env / "received" / "c1" / "lines").read_text().splitlines() == [
        f"streams/firmware.bin {2 << 20}",
        "streams/notes.txt 300",
    ]
    for name, path in files:
        assert received(env, name) == path.read_bytes()


@needs_mender_artifact
@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_chunks_lent_to_a_lagging_hash_thread_are_not_refilled_before_it_hashed_them(
    env: Path, compression: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream's buffers go to the reader's hash thread uncopied (``readinto_lent``): with
    that thread made slow, a buffer refilled before it was hashed would be hashed with the
    wrong bytes, and Download would fail the checksum of a good file."""
    assert streams.AHEAD + 2 >= hashing.IN_FLIGHT + 1  # the buffers the lending needs
    real_hash = hashing._Chunk.hash
    handed = 0

    def lagging(chunk: hashing._Chunk) -> None:
        nonlocal handed
        handed += 1
        time.sleep(0.005)
        real_hash(chunk)

    monkeypatch.setattr(hashing._Chunk, "hash", lagging)
    files = payload(env, {"firmware.bin": 12 << 20})
    artifact = write_artifact(env, files, compression)
    with real_feed(artifact) as feed:
        download(env, feed)
    assert received(env, "firmware.bin") == files[0][1].read_bytes()
    assert handed >= 10  # about a chunk per MiB went to the hash thread


@needs_mender_artifact
def test_a_real_artifact_as_one_whole_stream(env: Path) -> None:
    behave(env, "NeedsUnpackedArtifact", "echo No")
    artifact = write_artifact(env, payload(env, {"firmware.bin": 1 << 20}))
    with real_feed(artifact) as feed:
        download(env, feed)
    assert received(env, "rtos-v2.mender") == artifact.read_bytes()


@needs_mender_artifact
def test_a_corrupted_real_artifact_fails_download(env: Path) -> None:
    files = payload(env, {"firmware.bin": 3 << 20})
    artifact = write_artifact(env, files, "none")
    data = bytearray(artifact.read_bytes())
    where = data.find(files[0][1].read_bytes()[:4096]) + (2 << 20)
    data[where] ^= 0xFF
    artifact.write_bytes(bytes(data))
    started = time.monotonic()
    with real_feed(artifact) as feed, pytest.raises(ArtifactError) as raised:
        download(env, feed, timeout=30)
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert message.startswith(f"rtos/c1 (interface {INTERFACE}): Download failed: ")
    assert "firmware.bin" in message
    assert "sha256" in message or "checksum" in message
    kept = env / "received" / "c1" / "firmware.bin"
    assert kept.stat().st_size < 3 << 20, "the Interface never got the whole bad file"


@needs_mender_artifact
def test_a_real_artifact_the_interface_stops_reading(env: Path) -> None:
    behave(env, "Download", 'line="$(cat stream-next)"; head -c 1000 "$line" >/dev/null; sleep 300')
    artifact = write_artifact(env, payload(env, {"firmware.bin": 8 << 20}))
    started = time.monotonic()
    with real_feed(artifact) as feed, pytest.raises(InterfaceError, match="stopped reading"):
        download(env, feed, timeout=30)
    assert time.monotonic() - started < 5
    # (the reader's hash thread, started on first use, stays for the process)
    streaming = [t.name for t in threading.enumerate() if t.name.startswith("stream-")]
    assert streaming == [], "the writer and reader threads have ended"


def test_an_upstream_artifact_that_is_not_read_is_stored_by_the_feed(env: Path) -> None:
    behave(env, "Download", "exit 0")
    with real_feed(FIXTURES / "rtos-v1.mender") as feed:
        download(env, feed)
        assert not feed.consumed
        stored = feed.save_to(env / "files")
    assert [p.name for p in stored] == [p.name for p in (env / "files").iterdir()]
    assert all(p.stat().st_size == 0 for p in stored)  # its one payload file is empty


def test_an_upstream_artifact_streams(env: Path) -> None:
    with real_feed(FIXTURES / "rtos-v2.mender") as feed:
        download(env, feed)
    [line] = (env / "received" / "c1" / "lines").read_text().splitlines()
    assert line.startswith("streams/")
    assert received(env, line.removeprefix("streams/")) == b""


class _HangingFile:
    """A payload file whose source stops sending after ``before`` bytes (a hung server)."""

    def __init__(self, name: str, release: threading.Event, before: int = 0) -> None:
        self.name = name
        self.size = 1 << 20
        self._release = release
        self._left = before

    def read(self, n: int = -1, /) -> bytes:
        if self._left:
            data, self._left = bytes(min(n, self._left)), 0
            return data
        self._release.wait(60)
        return b""


class HangingFeed:
    """Payload files from a source that hangs: inside the first file, or before the second."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.release = threading.Event()
        self.consumed = False

    def files(self) -> Iterator[object]:
        self.consumed = True
        if self.where == "inside":
            yield _HangingFile("image.bin", self.release, before=1000)
            return
        first = io.BytesIO(bytes(1000))
        first.name, first.size = "first.bin", 1000  # type: ignore[attr-defined]
        yield first
        self.release.wait(60)  # the next tar header never comes
        yield _HangingFile("second.bin", self.release)


@pytest.mark.parametrize(
    ("where", "position"),
    [
        ("inside", "waiting for more of streams/image.bin from the Artifact's source (1000 of "
                   "1048576 bytes written)"),
        ("between", "waiting for the next payload file from the Artifact's source"),
    ],
)
def test_a_hung_source_ends_at_the_interface_deadline(
    env: Path, where: str, position: str
) -> None:
    feed = HangingFeed(where)
    started = time.monotonic()
    try:
        with pytest.raises(InterfaceTimeout) as raised:
            download(env, feed, timeout=1.5)
        assert time.monotonic() - started < 6
    finally:
        feed.release.set()
    assert "Download ran longer than InterfaceTimeoutSeconds (1.5 s)" in str(raised.value)
    assert position in str(raised.value)
