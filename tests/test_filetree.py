"""The File API directory: layout, contents, modes, idempotent re-creation, removal."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from orchestrator_core import drivers, filetree
from orchestrator_core.context import Component, InterfaceContext
from orchestrator_core.errors import ArtifactError

HEADER_INFO = (
    b'{"payloads":[{"type":"rtos-interface"}],"artifact_provides":{"artifact_name":"rtos-v2"}}'
)
TYPE_INFO = json.dumps(
    {
        "type": "rtos-interface",
        "artifact_provides": {"rootfs-image.rtos-interface.version": "rtos-v2"},
    }
).encode()


def prepare(
    work: Path, provides: dict[str, str] | None = None, shared: Path | None = None
) -> Path:
    return filetree.prepare(
        work,
        shared=shared,
        component_type="rtos",
        provides={"artifact_name": "rtos-v1", "rootfs-image.rtos-interface.version": "rtos-v1"}
        if provides is None
        else provides,
        artifact_name="rtos-v2",
        artifact_group="rtos-boards",
        payload_type="rtos-interface",
        header_info=HEADER_INFO,
        type_info=TYPE_INFO,
        meta_data=b"",
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_layout_and_contents(tmp_path: Path) -> None:
    work = prepare(tmp_path / "work" / "1" / "rtos" / "c1")
    assert sorted(p.name for p in work.iterdir()) == [
        "current_artifact_group",
        "current_artifact_name",
        "current_device_type",
        "header",
        "tmp",
        "version",
    ]
    assert (work / "version").read_text() == "1\n"
    assert (work / "current_artifact_name").read_text() == "rtos-v1\n"
    assert (work / "current_artifact_group").read_text() == ""  # not in the Provides
    assert (work / "current_device_type").read_text() == "rtos\n"
    header = work / "header"
    assert {p.name: p.read_bytes() for p in header.iterdir()} == {
        "artifact_group": b"rtos-boards",
        "artifact_name": b"rtos-v2",
        "payload_type": b"rtos-interface",
        "header-info": HEADER_INFO,
        "type-info": TYPE_INFO,
        "meta-data": b"",
    }
    assert list((work / "tmp").iterdir()) == []


def test_directories_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        work = tmp_path / "work"
        work.mkdir(mode=0o777)
        work.chmod(0o777)
        prepare(work)
    finally:
        os.umask(old)
    for directory in (work, work / "tmp", work / "header", filetree.files_dir(work)):
        assert mode(directory) == 0o700, directory
    assert mode(work / "version") & 0o077 == 0


def test_preparing_again_keeps_files_and_tmp_and_drops_a_stale_streams_tree(tmp_path: Path) -> None:
    work = prepare(tmp_path / "work")
    (filetree.files_dir(work) / "image.bin").write_bytes(b"payload")
    (work / "tmp" / "staged").write_bytes(b"staged by Download")
    os.mkfifo(work / "stream-next")
    (work / "streams").mkdir()
    os.mkfifo(work / "streams" / "image.bin")
    inode = (work / "header" / "type-info").stat().st_ino
    (work / "current_artifact_name").write_text("garbage")

    prepare(work)

    assert (work / "files" / "image.bin").read_bytes() == b"payload"
    assert (work / "tmp" / "staged").read_bytes() == b"staged by Download"
    assert not (work / "stream-next").exists()
    assert not (work / "streams").exists()
    assert (work / "header" / "type-info").stat().st_ino == inode, "unchanged: not rewritten"
    assert (work / "current_artifact_name").read_text() == "rtos-v1\n"
    assert not [p for p in work.rglob(".*")], "no temporary files left behind"


FILES = ["version", "current_artifact_group", "current_artifact_name", "current_device_type",
         "header/artifact_group", "header/artifact_name", "header/payload_type",
         "header/header-info", "header/type-info", "header/meta-data"]


def test_components_of_a_deployment_share_one_copy_of_each_content(tmp_path: Path) -> None:
    deployment = tmp_path / "work" / "7"
    shared = filetree.shared_copies(deployment)
    assert shared == tmp_path / "work" / "7.shared"
    first = prepare(deployment / "rtos" / "1", shared=shared)
    second = prepare(deployment / "rtos" / "2", shared=shared)
    other = prepare(deployment / "rtos" / "3", shared=shared, provides={
        "artifact_name": "rtos-v0", "rootfs-image.rtos-interface.version": "x"})
    alone = prepare(tmp_path / "alone")
    for name in FILES:
        assert (first / name).read_bytes() == (alone / name).read_bytes(), name
        assert (first / name).stat().st_ino == (second / name).stat().st_ino, name
        assert mode(first / name) & 0o077 == 0
    assert (other / "current_artifact_name").read_text() == "rtos-v0\n"
    assert (other / "current_artifact_name").stat().st_ino != (
        first / "current_artifact_name").stat().st_ino
    assert (other / "header" / "type-info").stat().st_ino == (
        first / "header" / "type-info").stat().st_ino
    # one file per distinct content (8 distinct contents: two header files are empty, both
    # current_artifact_group and artifact_group, ...), none left half-made
    contents = {(first / name).read_bytes() for name in FILES} | {b"rtos-v0\n"}
    assert len(list(shared.iterdir())) == len(contents)
    assert mode(shared) == 0o700

    assert filetree.remove_all(deployment.parent) == []
    assert not deployment.exists() and not shared.exists()


def test_components_prepared_side_by_side_write_each_shared_copy_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = tmp_path / "work" / "7"
    shared = filetree.shared_copies(deployment)
    published: list[str] = []
    publish = filetree._publish

    def slow_publish(source: Path, data: bytes) -> None:
        published.append(source.name)
        time.sleep(0.05)  # long enough for every other Component to find the copy missing
        publish(source, data)

    monkeypatch.setattr(filetree, "_publish", slow_publish)
    together = threading.Barrier(8)

    def prepare_one(index: int) -> Path:
        together.wait()
        return prepare(deployment / "rtos" / str(index), shared=shared)

    with ThreadPoolExecutor(8) as pool:
        works = list(pool.map(prepare_one, range(8)))
    assert sorted(published) == sorted(path.name for path in shared.iterdir())
    version = shared / hashlib.sha256(b"1\n").hexdigest()
    assert {(work / "version").stat().st_ino for work in works} == {version.stat().st_ino}


def test_refreshing_a_shared_file_does_not_change_the_other_components(tmp_path: Path) -> None:
    deployment = tmp_path / "work" / "7"
    shared = filetree.shared_copies(deployment)
    first = prepare(deployment / "rtos" / "1", shared=shared)
    second = prepare(deployment / "rtos" / "2", shared=shared)
    # resume after the Component was updated behind our back: its Provides changed
    prepare(first, shared=shared, provides={"artifact_name": "rtos-v2",
                                            "rootfs-image.rtos-interface.version": "rtos-v2"})
    assert (first / "current_artifact_name").read_text() == "rtos-v2\n"
    assert (second / "current_artifact_name").read_text() == "rtos-v1\n"


def test_without_hard_links_each_component_gets_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(source: object, target: object) -> None:
        raise PermissionError(1, "Operation not permitted")  # as on a filesystem without links

    monkeypatch.setattr(os, "link", refuse)
    deployment = tmp_path / "work" / "7"
    first = prepare(deployment / "rtos" / "1", shared=filetree.shared_copies(deployment))
    second = prepare(deployment / "rtos" / "2", shared=filetree.shared_copies(deployment))
    for name in FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes()
        assert (first / name).stat().st_ino != (second / name).stat().st_ino


@pytest.mark.parametrize("name", ["image.bin", "a b", "..x", ".hidden", "ü"])
def test_entry_names_accepted(name: str) -> None:
    assert filetree.check_entry_name(name) == name


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "is empty, '.' or '..'"),
        (".", "is empty, '.' or '..'"),
        ("..", "is empty, '.' or '..'"),
        ("back\\slash", "contains a path separator"),
        ("../etc/passwd", "contains a path separator"),
        ("/abs", "contains a path separator"),
        ("a\0b", "NUL"),
        ("two\nlines", "contains a line break"),
        ("carriage\rreturn", "contains a line break"),
        ("bad-\udcff-byte", "is not valid UTF-8"),
    ],
)
def test_entry_names_refused(name: str, problem: str) -> None:
    with pytest.raises(ArtifactError, match=problem):
        filetree.check_entry_name(name)


def test_remove_all(tmp_path: Path) -> None:
    work = prepare(tmp_path / "work" / "3")
    (filetree.files_dir(work) / "x").write_bytes(b"x")
    assert filetree.remove_all(tmp_path / "work") == []
    assert list((tmp_path / "work").iterdir()) == []
    assert filetree.remove_all(tmp_path / "work") == []  # already gone: fine
    assert filetree.remove_all(tmp_path / "none") == []


@pytest.mark.skipif(shutil.which("jq") is None, reason="the recorder Interface reads JSON with jq")
def test_an_interface_installs_from_the_header_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_INTERFACE_DIR", str(tmp_path))
    interfaces = tmp_path / "data" / "interfaces" / "v1"
    interfaces.mkdir(parents=True)
    (interfaces / "rtos-interface").symlink_to(Path(__file__).parent / "interfaces" / "recorder")
    driver = drivers.load(Component("rtos", "rtos-interface", ("c1",)), tmp_path / "data")
    work = prepare(tmp_path / "work")

    def ctx(**fields: object) -> InterfaceContext:
        return driver.context(log=logging.getLogger("test"), timeout_seconds=10, **fields)

    assert driver.provides(ctx()) == {"rootfs-image.rtos-interface.version": "v1"}
    driver.run_state("artifact_install", ctx(work_dir=work))
    assert driver.provides(ctx()) == {"rootfs-image.rtos-interface.version": "rtos-v2"}
    driver.run_state("artifact_rollback", ctx(work_dir=work))
    assert driver.provides(ctx()) == {"rootfs-image.rtos-interface.version": "v1"}


@pytest.mark.parametrize("slow_after", [None, 0.0])
def test_remove_all_goes_to_threads_once_a_removal_is_slow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slow_after: float | None
) -> None:
    for index in range(6):
        work = prepare(tmp_path / "work" / "3" / "rtos" / f"c{index}")
        (filetree.files_dir(work) / "x").write_bytes(b"x")
    if slow_after is not None:  # every removal counts as slow: the first one, then threads
        monkeypatch.setattr(filetree, "SLOW_REMOVAL_SECONDS", slow_after)
    removed_by: dict[str, int] = {}
    rmtree = shutil.rmtree

    def recording(path: str | Path, *args: object, **kwargs: object) -> None:
        removed_by[Path(path).name] = threading.get_ident()
        rmtree(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(shutil, "rmtree", recording)
    assert filetree.remove_all(tmp_path / "work") == []
    assert list((tmp_path / "work").iterdir()) == []
    here = threading.get_ident()
    in_threads = {name for name, thread in removed_by.items() if thread != here}
    if slow_after is None:  # quick removals: no thread at all
        assert in_threads == set()
    else:  # the first one (whichever the directory listed first) here, the rest in threads
        assert len(in_threads) == 5 and in_threads < {f"c{index}" for index in range(6)}
    assert {f"c{index}" for index in range(6)} | {"3"} <= set(removed_by)


def test_a_streams_tree_made_ahead_is_taken_once_and_replaces_a_leftover(tmp_path: Path) -> None:
    # a Download interrupted while streaming left a pipe of its own in streams/
    (tmp_path / filetree.STREAMS).mkdir()
    os.mkfifo(tmp_path / filetree.STREAMS / "boot.img")
    os.mkfifo(tmp_path / filetree.STREAM_NEXT)
    filetree.make_streams(tmp_path, ahead=True)
    assert os.listdir(tmp_path / filetree.STREAMS) == []
    assert stat.S_ISFIFO(os.lstat(tmp_path / filetree.STREAM_NEXT).st_mode)
    assert stat.S_IMODE(os.lstat(tmp_path / filetree.STREAMS).st_mode) == 0o700
    assert filetree.take_streams(tmp_path)
    assert not filetree.take_streams(tmp_path)  # the next Download (a retry) makes its own
    filetree.make_streams(tmp_path)  # not ahead: nothing to take
    assert not filetree.take_streams(tmp_path)
