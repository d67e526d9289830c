"""How payloads reach executable Interfaces during a real deployment (SPEC 5): streamed
file by file, with sizes, as the whole .mender, or stored in files/ when not streamed."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from artifact.artifact_server import ArtifactServer
from systems import REPO, System

RECORDER = REPO / "tests" / "interfaces" / "recorder"
FILES = {"boot.img": bytes(range(256)) * 300, "app.bin": b"application" * 5000}


@pytest.fixture(scope="module")
def two_file_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("streaming")
    argv = ["mender-artifact", "write", "module-image", "-T", "fw", "-t", "board", "-n",
            "fw-v2", "--provides", "rootfs-image.fw.version:v2", "--compression", "none", "-o",
            str(directory / "fw-v2.mender")]
    for name, data in FILES.items():
        (directory / name).write_bytes(data)
        argv += ["-f", str(directory / name)]
    subprocess.run(argv, check=True, capture_output=True)
    for name in FILES:
        (directory / name).unlink()
    return directory


def boards(system: System, artifacts: Path, tmp_path: Path, keys: list[str] | None = None
           ) -> Path:
    """A System of ``board`` Components on the recorder, one per key (its interface_arg; one
    without arguments when no keys are given), taking fw-v2 from ``artifacts``; the Manifest."""
    system.add_interface("fw", RECORDER)
    components = ("".join(f"  - {{component_type: board, interface: fw, interface_args: [{key}]}}\n"
                          for key in keys) if keys is not None
                  else "  - component_type: board\n    interface: fw\n")
    system.write_topology("api_version: mender/v1\nkind: topology\nsystem_type: s\n"
                          "components:\n" + components)
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}]})
    manifest = tmp_path / "m.yaml"
    manifest.write_text("api_version: mender/v1\nkind: manifest\nname: m\n"
                        "system_types_compatible: [s]\ncomponent_types:\n"
                        "  board: {artifact_name: fw-v2, update_strategy: {order: 1}}\n")
    return manifest


@pytest.fixture
def board(system: System, two_file_artifact: Path, tmp_path: Path) -> tuple[System, Path]:
    return system, boards(system, two_file_artifact, tmp_path)


def behave(system: System, state: str, snippet: str) -> None:
    directory = system.root / "behaviour" / "all"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / state).write_text(snippet)


def install(system: System, manifest: Path) -> subprocess.CompletedProcess[str]:
    result = system.run("install", str(manifest), env={"TEST_INTERFACE_DIR": str(system.root)})
    assert "Traceback" not in result.stderr
    return result


def test_streamed_file_by_file(board: tuple[System, Path]) -> None:
    system, manifest = board
    result = install(system, manifest)
    assert result.returncode == 0, result.stderr
    received = system.root / "received" / "board"
    # in the Artifact's order, which is the order mender-artifact was given the files
    assert (received / "lines").read_text().splitlines() == ["streams/boot.img",
                                                              "streams/app.bin"]
    for name, data in FILES.items():
        assert (received / name).read_bytes() == data


def test_streamed_with_sizes(board: tuple[System, Path]) -> None:
    system, manifest = board
    behave(system, "ProvidePayloadFileSizes", "echo Yes")
    result = install(system, manifest)
    assert result.returncode == 0, result.stderr
    lines = (system.root / "received" / "board" / "lines").read_text().splitlines()
    assert lines == [f"streams/boot.img {len(FILES['boot.img'])}",
                     f"streams/app.bin {len(FILES['app.bin'])}"]
    calls = [line.split("\t")[1] for line in (system.root / "calls.log").read_text().splitlines()]
    assert "DownloadWithFileSizes" in calls and "Download" not in calls


def test_whole_artifact_as_one_stream(board: tuple[System, Path], two_file_artifact: Path
                                      ) -> None:
    system, manifest = board
    behave(system, "NeedsUnpackedArtifact", "echo No")
    result = install(system, manifest)
    assert result.returncode == 0, result.stderr
    received = system.root / "received" / "board"
    assert (received / "lines").read_text().splitlines() == ["streams/fw-v2.mender"]
    calls = [line.split("\t")[1] for line in (system.root / "calls.log").read_text().splitlines()]
    assert calls == ["Identity", "Provides", "NeedsUnpackedArtifact", "ProvidePayloadFileSizes",
                     "Download", "SupportsRollback", "ArtifactInstall", "NeedsArtifactReboot",
                     "ArtifactCommit", "Cleanup"]
    original = (two_file_artifact / "fw-v2.mender").read_bytes()
    assert hashlib.sha256((received / "fw-v2.mender").read_bytes()).digest() == \
        hashlib.sha256(original).digest()


def test_the_streams_tree_exists_for_the_download_only_even_when_it_fails_before_streaming(
    board: tuple[System, Path],
) -> None:
    """The engine makes streams/ and stream-next before the Download step fans out: a
    Download that fails before it streams must not leave them to the states after it."""
    system, manifest = board
    listing = 'ls -A | sort | tr "\\n" " " > "$DIR/ls.$STATE"; '
    behave(system, "NeedsUnpackedArtifact", listing + "echo Yes")
    behave(system, "ProvidePayloadFileSizes", listing + "exit 3")
    behave(system, "Cleanup", listing + "exit 0")
    result = install(system, manifest)
    assert result.returncode == 1, result.stderr
    assert "ProvidePayloadFileSizes" in result.stderr
    calls = [line.split("\t")[1] for line in (system.root / "calls.log").read_text().splitlines()]
    assert calls[-3:] == ["NeedsUnpackedArtifact", "ProvidePayloadFileSizes", "Cleanup"]
    seen = (system.root / "ls.Cleanup").read_text().split()
    assert "stream-next" not in seen and "streams" not in seen, seen
    assert {"header", "tmp", "version"} <= set(seen)


def test_every_member_of_a_large_group_finds_its_whole_tree_made_before_its_download(
    system: System, two_file_artifact: Path, tmp_path: Path
) -> None:
    """Five Components: the engine makes their directories on two threads before the fan-out."""
    manifest = boards(system, two_file_artifact, tmp_path, [f"b{i}" for i in range(5)])
    behave(system, "NeedsUnpackedArtifact",
           'find . | sort | tr "\\n" " " > "$DIR/tree.$KEY"; cat header/artifact_name '
           '> "$DIR/name.$KEY"; echo Yes')
    result = install(system, manifest)
    assert result.returncode == 0, result.stderr
    for i in range(5):
        tree = set((system.root / f"tree.b{i}").read_text().split())
        assert {"./version", "./tmp", "./header/type-info", "./stream-next", "./streams"} <= tree
        assert (system.root / f"name.b{i}").read_text() == "fw-v2"
        assert (system.root / "received" / f"b{i}" / "app.bin").read_bytes() == FILES["app.bin"]


def test_not_streamed_then_stored_in_files(board: tuple[System, Path]) -> None:
    system, manifest = board
    behave(system, "Download", "exit 0")
    behave(system, "ArtifactInstall",
           'mkdir -p "$DIR/version" && cp files/boot.img files/app.bin "$DIR/" && '
           'echo v2 > "$DIR/version/$KEY"')
    result = install(system, manifest)
    assert result.returncode == 0, result.stderr
    for name, data in FILES.items():
        assert (system.root / name).read_bytes() == data
    assert "rootfs-image.fw.version=v2" in system.run(
        "show-provides", env={"TEST_INTERFACE_DIR": str(system.root)}).stdout


def test_a_corrupted_payload_fails_download_and_nothing_is_installed(
    board: tuple[System, Path], two_file_artifact: Path, tmp_path: Path
) -> None:
    system, manifest = board
    corrupted = tmp_path / "corrupted"
    corrupted.mkdir()
    data = bytearray((two_file_artifact / "fw-v2.mender").read_bytes())
    # flip a byte inside the last payload file (the data section is not compressed)
    where = data.rfind(b"application")
    assert where > 0
    data[where] ^= 0xFF
    (corrupted / "fw-v2.mender").write_bytes(bytes(data))
    # the plan reads the header of the good file, the Download streams the corrupted one
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(corrupted)}]})
    result = install(system, manifest)
    assert result.returncode == 1, result.stderr
    assert "app.bin" in result.stderr, result.stderr[-3000:]
    assert "payload file data/0000/app.bin does not match the manifest" in result.stderr
    calls = [line.split("\t")[1] for line in (system.root / "calls.log").read_text().splitlines()]
    assert calls[-2:] == ["Download", "Cleanup"]
    assert "ArtifactInstall" not in calls


def test_a_cached_copy_that_fails_verification_is_evicted_and_fetched_again(
    board: tuple[System, Path], two_file_artifact: Path
) -> None:
    system, manifest = board
    good = (two_file_artifact / "fw-v2.mender").read_bytes()
    cache = system.root / "cache"
    cache.mkdir()
    server = ArtifactServer()  # only what a URL source brings is cached
    server.behaviour.files["/fw-v2.mender"] = good
    system.write_config({
        "ArtifactSources": [{"Type": "url", "Template": server.url("/{artifact_name}.mender")}],
        "ArtifactsCache": {"Enabled": True, "Path": str(cache)},
    })
    try:
        assert install(system, manifest).returncode == 0
        assert len(server.behaviour.seen) == 2  # the plan's header, then the Download
        second_install(system, cache, good, manifest)
        assert len(server.behaviour.seen) == 4  # fetched again after the eviction
    finally:
        server.close()


def second_install(system: System, cache: Path, good: bytes, manifest: Path) -> None:
    entry = cache / "fw-v2.mender"
    assert entry.read_bytes() == good
    # the board back on v1, and the cached copy's payload rotten on disk
    (system.root / "version" / "board").unlink()
    shutil.rmtree(system.root / "received")
    rotten = bytearray(good)
    rotten[rotten.rfind(b"application")] ^= 0xFF
    entry.write_bytes(bytes(rotten))
    result = install(system, manifest)
    assert result.returncode == 0, result.stderr
    assert "the cached copy of fw-v2 fails verification" in result.stderr
    for name, data in FILES.items():
        assert (system.root / "received" / "board" / name).read_bytes() == data
    assert entry.read_bytes() == good


def test_components_taking_files_share_one_verified_read_only_copy(
    system: System, two_file_artifact: Path, tmp_path: Path
) -> None:
    """Three Components of one group leave the payload to files/: each finds both files, with
    the right bytes, as hard links to one read-only copy (one read of the Artifact, not three)."""
    manifest = boards(system, two_file_artifact, tmp_path, ["b0", "b1", "b2"])
    behave(system, "Download", "exit 0")
    behave(system, "ArtifactInstall",
           'mkdir -p "$DIR/got/$KEY" "$DIR/version" && cp files/* "$DIR/got/$KEY/" && '
           'stat -c "%n %i %a %h" files/* > "$DIR/got/$KEY.stat" && '
           'echo v2 > "$DIR/version/$KEY"')
    result = install(system, manifest)
    assert result.returncode == 0, result.stderr
    inodes = set()
    for key in ("b0", "b1", "b2"):
        for name, data in FILES.items():
            assert (system.root / "got" / key / name).read_bytes() == data
        stats = [line.split() for line in (system.root / "got" / f"{key}.stat").read_text()
                 .splitlines()]
        assert sorted(Path(path).name for path, *_ in stats) == sorted(FILES)
        assert {mode for _, _, mode, _ in stats} == {"400"}
        # the shared copy and the three Components' links
        assert {int(links) for *_, links in stats} == {4}
        inodes |= {(Path(path).name, inode) for path, inode, *_ in stats}
    assert len(inodes) == len(FILES)


def test_a_corrupted_payload_fails_the_download_of_every_component_taking_files(
    system: System, two_file_artifact: Path, tmp_path: Path
) -> None:
    corrupted = tmp_path / "corrupted"
    corrupted.mkdir()
    data = bytearray((two_file_artifact / "fw-v2.mender").read_bytes())
    data[data.rfind(b"application")] ^= 0xFF
    (corrupted / "fw-v2.mender").write_bytes(bytes(data))
    # the header is intact: planning passes, each Download finds the payload file broken
    manifest = boards(system, corrupted, tmp_path, ["b0", "b1"])
    behave(system, "Download", "exit 0")
    result = install(system, manifest)
    assert result.returncode == 1, result.stderr
    for key in ("b0", "b1"):
        assert f"board/{key}" in result.stderr, result.stderr
    assert result.stderr.count("does not match the manifest") >= 2, result.stderr[-3000:]
    calls = (system.root / "calls.log").read_text()
    assert "ArtifactInstall" not in calls
