"""Files replaced atomically: the temporary files made without ``tempfile``."""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

import pytest

from orchestrator_core import atomic


def test_a_temporary_left_by_a_dead_process_of_the_same_id_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = tmp_path / "record.json"
    monkeypatch.setattr(atomic, "_temporaries", itertools.count())
    stale = tmp_path / f".record.json.{os.getpid()}-{threading.get_ident()}-0.tmp"
    stale.write_bytes(b"left by a process that died")
    os.symlink(tmp_path / "elsewhere", tmp_path / f".record.json.{os.getpid()}-"
               f"{threading.get_ident()}-1.tmp")  # never followed
    atomic.write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o600
    assert stale.read_bytes() == b"left by a process that died"
    assert not (tmp_path / "elsewhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [target.name, stale.name, f".record.json.{os.getpid()}-{threading.get_ident()}-1.tmp"])


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic.replacing(target) as out:
        out.write(b"half")
        raise RuntimeError("disk gone")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_threads_writing_at_once_each_get_a_temporary_of_their_own(tmp_path: Path) -> None:
    def write(index: int) -> None:
        for _ in range(20):
            atomic.write_bytes(tmp_path / f"{index % 2}.txt", str(index).encode(), durable=False)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.txt", "1.txt"]
    assert int((tmp_path / "0.txt").read_text()) % 2 == 0
