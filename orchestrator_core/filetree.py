"""The File API directory of one Component (SPEC 5): its layout, creation and removal.

Layout, relative to the directory handed to the Interface as argument 2 and working directory::

    version  current_artifact_group  current_artifact_name  current_device_type
    header/{artifact_group,artifact_name,payload_type,header-info,type-info,meta-data}
    tmp/                   scratch space kept between states
    stream-next, streams/  named pipes, during Download only (see ``streams``)
    files/                 payload files the Interface did not stream itself

Everything here takes plain values (strings, bytes, mappings) so the Artifact package and the
engine can change their own types freely. ``prepare`` is idempotent: ``resume`` calls it
again on an existing directory and ``tmp/`` and ``files/`` survive.

The files above hold the same bytes for every Component of a type (the Artifact's header,
the version, mostly the current Provides), so a deployment keeps one copy of each content in
``<deployment dir>.shared/`` and hard-links it into each Component's directory: a System of
hundreds of Components then allocates a handful of inodes instead of ten per Component, which
is most of the cost of this tree on a filesystem slow to allocate them, and fewer writes to
flash. Interfaces only read these files; where links are not supported, they are copies.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from orchestrator_core import atomic
from orchestrator_core.errors import ArtifactError

PROTOCOL_VERSION = "1"
STREAM_NEXT = "stream-next"
STREAMS = "streams"
FILES = "files"
TMP = "tmp"
HEADER = "header"
REMOVERS = 16  # threads removing Component directories, once removing them turns out slow
# a Component's directory taking longer than this to remove is waiting for the disk (removed
# one after another they take 0.06 to 0.4 ms each where the disk keeps up)
SLOW_REMOVAL_SECONDS = 0.002
_publishing = threading.Lock()  # one thread at a time writes a shared copy
# directories whose streams tree was made ahead of their Download and not taken by it yet
_streams_ahead: set[Path] = set()


def _create(path: Path, data: bytes) -> bool:
    """Write a new file; ``False`` if it already exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return True


def shared_copies(deployment_dir: Path) -> Path:
    """Where one deployment keeps the single copy of each File API file's content: next to
    its directory, under a name no deployment id takes."""
    return deployment_dir.parent / f"{deployment_dir.name}.shared"


def _link_or_create(path: Path, data: bytes, shared: Path) -> None:
    """``path`` with ``data``: a hard link to the shared copy of ``data``, made first if this
    is the first file with these bytes."""
    import hashlib  # a deployment's work, not the queries'

    source = shared / hashlib.sha256(data).hexdigest()
    try:
        os.link(source, path)
        return
    except FileNotFoundError:
        pass
    except OSError:  # no hard links here (or too many to one file): a copy of its own
        _create(path, data)
        return
    # The Components of a group are prepared side by side: without the lock, all those that
    # started before the first copy had its name would each write one (and allocate, then
    # free, an inode for it), most of the cost this sharing is there to save.
    with _publishing:
        if not os.path.lexists(source):
            _publish(source, data)
    try:
        os.link(source, path)
    except OSError:
        _create(path, data)


def _publish(source: Path, data: bytes) -> None:
    """The shared copy, complete before it has its name (so a Component linking it at the
    same moment never sees it half written); no fsync: the tree is made again after a crash."""
    atomic.make_private_dir(source.parent)
    atomic.write_bytes(source, data, durable=False)


def _write(path: Path, data: bytes) -> None:
    # a new file: no Interface runs before prepare() returns, so nobody can see it half
    # written, and a crash before then means it is written again on resume
    if _create(path, data):
        return
    # a resumed deployment re-creates its directory: unchanged files are not rewritten
    if path.read_bytes() != data:
        # scratch files: prepare() writes them again after a crash, so no fsync is needed
        atomic.write_bytes(path, data, durable=False)


def write_version(directory: Path) -> None:
    """The one file every Interface may rely on, even for queries outside a deployment."""
    _write(directory / "version", f"{PROTOCOL_VERSION}\n".encode())


def _new_private_dir(path: Path) -> bool:
    """Create ``path`` 0700 (and its parents); ``False`` if it existed (then made 0700)."""
    try:
        os.mkdir(path, 0o700)
    except FileNotFoundError:
        atomic.make_private_dir(path.parent)
        return _new_private_dir(path)
    except FileExistsError:
        atomic.make_private_dir(path)
        return False
    os.chmod(path, 0o700)  # the umask may have taken bits away
    return True


def prepare(
    work_dir: Path,
    *,
    component_type: str,
    provides: Mapping[str, str],
    artifact_name: str,
    artifact_group: str | None,
    payload_type: str | None,
    header_info: bytes,
    type_info: bytes,
    meta_data: bytes,
    shared: Path | None = None,
) -> Path:
    """Create (or refresh) the File API directory of one Component for one Artifact.

    ``provides`` is the Component's current Provides (``artifact_name`` and
    ``artifact_group`` are taken from it, empty when absent); the three ``bytes`` arguments
    are the verbatim files of the Artifact header. With ``shared`` (``shared_copies`` of the
    deployment's directory), new files are links to one copy per content. Returns
    ``work_dir``.
    """
    header = work_dir / HEADER
    files: dict[Path, bytes] = {work_dir / "version": f"{PROTOCOL_VERSION}\n".encode()}
    for key in ("artifact_group", "artifact_name"):
        value = provides.get(key)
        files[work_dir / f"current_{key}"] = b"" if value is None else f"{value}\n".encode()
    files[work_dir / "current_device_type"] = f"{component_type}\n".encode()
    files[header / "artifact_group"] = (artifact_group or "").encode()
    files[header / "artifact_name"] = artifact_name.encode()
    files[header / "payload_type"] = (payload_type or "").encode()
    files[header / "header-info"] = header_info
    files[header / "type-info"] = type_info
    files[header / "meta-data"] = meta_data

    # The first time (the common case, hundreds of times at the start of a large
    # deployment) everything is new: no leftovers to look for, no file to compare.
    fresh = _new_private_dir(work_dir)
    _new_private_dir(work_dir / TMP)
    _new_private_dir(header)
    if not fresh:
        remove_streams(work_dir)  # left behind only by a Download that was interrupted
    for path, data in files.items():
        if not fresh:
            _write(path, data)
        elif shared is not None:
            _link_or_create(path, data, shared)
        else:
            _create(path, data)
    return work_dir


def entry_name_problem(name: str) -> str | None:
    """What makes ``name`` unusable as one file name in ``streams/`` or ``files/``, or ``None``.

    Payload file names come from the Artifact, so one must never reach outside its
    directory (no separator of any system, no NUL), a line break would break the one-line
    ``stream-next`` protocol, and a name that is not UTF-8 could not be written into a
    manifest or announced to an Interface.
    """
    if name in ("", ".", ".."):
        return "is empty, '.' or '..'"
    if "/" in name or "\\" in name or "\0" in name:
        return "contains a path separator ('/' or '\\') or NUL"
    if "\n" in name or "\r" in name:
        return "contains a line break"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return None


def check_entry_name(name: str) -> str:
    """Return ``name`` if ``entry_name_problem`` finds nothing, else raise ``ArtifactError``."""
    problem = entry_name_problem(name)
    if problem is not None:
        raise ArtifactError(f"payload file name {name!r} {problem}")
    return name


def files_dir(work_dir: Path) -> Path:
    """``files/``, created private, where payload files are stored for non-streaming Interfaces."""
    return atomic.make_private_dir(work_dir / FILES)


def make_streams(work_dir: Path, *, ahead: bool = False) -> None:
    """``streams/`` and the ``stream-next`` pipe, for a Download; ``ahead``: made before the
    Download starts, for it to take (``take_streams``): the engine makes them before the
    Download step fans out (``Deployment._prepare_work_dirs`` says why)."""
    try:
        _make_streams(work_dir)
    except FileExistsError:  # left by a Download that was interrupted
        remove_streams(work_dir)
        _make_streams(work_dir)
    if ahead:
        _streams_ahead.add(work_dir)


def _make_streams(work_dir: Path) -> None:
    streams = work_dir / STREAMS
    os.mkdir(streams, 0o700)
    os.chmod(streams, 0o700)  # the umask may have taken bits away
    os.mkfifo(work_dir / STREAM_NEXT, 0o600)


def take_streams(work_dir: Path) -> bool:
    """Whether the streams tree of ``work_dir`` was made ahead and not taken yet; taken now."""
    try:
        _streams_ahead.remove(work_dir)  # one operation on a set: atomic between threads
    except KeyError:
        return False
    return True


def remove_streams(work_dir: Path, *, files_next: bool = False) -> None:
    """Remove ``stream-next`` and ``streams/``: they exist during Download only.

    With ``files_next`` (the Interface never opened ``stream-next``, so ``files/`` comes
    next), an empty ``streams/`` is renamed ``files/`` instead of removed: on ext4 without a
    journal, allocating an inode scans past every inode freed in the last minutes, which made
    directories the largest cost of a large System's deployment, and this saves one per
    Component.
    """
    (work_dir / STREAM_NEXT).unlink(missing_ok=True)
    if files_next and _renamed_empty(work_dir / STREAMS, work_dir / FILES):
        return
    try:
        # empty when the Interface took files/, as most do: one system call, not a tree walk
        os.rmdir(work_dir / STREAMS)
    except FileNotFoundError:
        pass
    except OSError:  # the pipes of the streams the Interface read
        _rmtree(work_dir / STREAMS)


def _renamed_empty(directory: Path, target: Path) -> bool:
    """Rename ``directory`` to ``target`` if it is empty and ``target`` is absent or empty."""
    try:
        with os.scandir(directory) as entries:
            if next(entries, None) is not None:
                return False
        os.rename(directory, target)
    except OSError:  # gone, or a non-empty files/ or a file in the way: removed as before
        return False
    return True


def remove_all(work_root: Path) -> list[str]:
    """Remove every deployment's File API directory (called when none is in progress) as far
    as possible: what cannot go (a mount an Interface left in ``tmp/``, a read-only file
    system) is skipped, and described in the list returned."""
    problems: list[str] = []

    def skip(_function: object, path: str, error: tuple[type, BaseException, object]) -> None:
        if not isinstance(error[1], FileNotFoundError):
            problems.append(f"{path}: {getattr(error[1], 'strerror', None) or error[1]}")

    import shutil  # here: the queries, which use this module for ``version`` only, never remove

    def remove(tree: Path) -> None:
        shutil.rmtree(tree, onerror=skip)

    if work_root.is_dir():
        trees = sorted(work_root.iterdir())
        # The Components' directories one after another while each goes quickly, then, once
        # one is slow, the rest in threads. Where every removal waits for the disk (a busy
        # journal), their waits overlap: three to four times faster on one machine. Where the
        # disk keeps up, threads only add the hand-over of the interpreter lock at every
        # system call: 100 Components took 4 to 5 times the CPU in threads (tmpfs, ext4 with
        # and without a journal), and 1.7 to 4 times the wall clock (bench/tree_removal.py).
        # The rest, one after another.
        components = iter([c for tree in trees for c in _component_dirs(tree)])
        for component in components:
            started = time.monotonic()
            remove(component)
            if time.monotonic() - started > SLOW_REMOVAL_SECONDS:
                break
        slow = list(components)  # what is left after a slow one
        if slow:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(REMOVERS) as pool:
                list(pool.map(remove, slow))
        for tree in trees:
            remove(tree)
    return problems


def _component_dirs(deployment: Path) -> list[Path]:
    """``<deployment>/<component_type>/<component id>`` (the layout ``planner.work_dir``
    makes); links are not followed, unreadable directories left to ``remove_all``."""
    try:
        if deployment.is_symlink() or not deployment.is_dir():
            return []
        return [c for t in deployment.iterdir() if not t.is_symlink() and t.is_dir()
                for c in t.iterdir() if not c.is_symlink() and c.is_dir()]
    except OSError:
        return []


def _rmtree(path: Path) -> None:
    import shutil

    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
