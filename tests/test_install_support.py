"""`mender-orchestrator install-support`: the support files from the installed package, at
the paths and modes of `make -C support install`, with its /data link logic."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from systems import REPO

CLI = [sys.executable, "-m", "orchestrator_core"]

EXPECTED = {
    "usr/share/mender/modules/v3/mender-orchestrator-manifest": 0o755,
    "usr/share/mender/inventory/mender-inventory-mender-orchestrator": 0o755,
    "usr/share/mender-orchestrator/interfaces/v1/rootfs-image": 0o755,
    "usr/lib/systemd/system/mender-orchestrator-resume.service": 0o644,
}
SOURCES = REPO / "orchestrator_core" / "support_files"


def install_support(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "install-support", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and link under ``root``: its mode and its content or link target."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_symlink():
            found[relative] = (0, os.readlink(path))
        elif path.is_file():
            found[relative] = (stat.S_IMODE(path.stat().st_mode), path.read_text())
        else:
            found[relative] = (stat.S_IMODE(path.stat().st_mode), "")
    return found


def test_every_file_at_its_path_with_its_mode(tmp_path: Path) -> None:
    result = install_support("--destdir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    files = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode)
             for p in tmp_path.rglob("*") if p.is_file()}
    assert files == EXPECTED
    assert result.stdout.splitlines() == [f"installed {tmp_path / p}" for p in EXPECTED]
    module = tmp_path / "usr/share/mender/modules/v3/mender-orchestrator-manifest"
    assert module.read_bytes() == (SOURCES / "modules/v3/mender-orchestrator-manifest").read_bytes()
    unit = (tmp_path / "usr/lib/systemd/system/mender-orchestrator-resume.service").read_text()
    assert "ExecStart=/usr/bin/mender-orchestrator resume\n" in unit
    assert "ConditionPathExists=/var/lib/mender-orchestrator/resume-at-boot\n" in unit
    assert "@" not in unit
    # no /data in the root: no datastore link
    assert not (tmp_path / "var").exists()


def test_prefix_bindir_and_datastore(tmp_path: Path) -> None:
    result = install_support("--destdir", str(tmp_path), "--prefix", "/usr/local",
                             "--bindir", "/opt/mo/bin", "--datastore", "/srv/mo")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "usr/local/share/mender/modules/v3/mender-orchestrator-manifest").is_file()
    unit = (tmp_path / "usr/local/lib/systemd/system/mender-orchestrator-resume.service")
    assert "ExecStart=/opt/mo/bin/mender-orchestrator resume\n" in unit.read_text()
    assert "Environment=MENDER_ORCHESTRATOR_DATASTORE_DIR=/srv/mo\n" in unit.read_text()


def test_datastore_linked_into_persistent_partition(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "var/lib/mender-orchestrator").mkdir(parents=True)  # empty: replaced by a link
    result = install_support("--destdir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    link = tmp_path / "var/lib/mender-orchestrator"
    assert os.readlink(link) == "/data/mender-orchestrator"
    assert stat.S_IMODE((tmp_path / "data/mender-orchestrator").stat().st_mode) == 0o700
    # again: the link is kept, nothing fails
    assert install_support("--destdir", str(tmp_path)).returncode == 0
    assert os.readlink(link) == "/data/mender-orchestrator"


def test_datastore_with_files_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    datastore = tmp_path / "var/lib/mender-orchestrator"
    datastore.mkdir(parents=True)
    (datastore / "journal.sqlite").write_text("x")
    result = install_support("--destdir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        f"{datastore} holds files; move them to {tmp_path}/data/mender-orchestrator "
        "and run install-support again")
    assert "Traceback" not in result.stderr
    assert (datastore / "journal.sqlite").read_text() == "x"


def test_relative_prefix_refused(tmp_path: Path) -> None:
    result = install_support("--destdir", str(tmp_path), "--prefix", "usr")
    assert result.returncode == 2
    assert "expected an absolute path on the device, got 'usr'" in result.stderr


def test_same_tree_as_the_support_makefile(tmp_path: Path) -> None:
    """support/Makefile (for image builds without Python) and the command never drift."""
    for root in ("make", "cli"):
        (tmp_path / root / "data").mkdir(parents=True)
    subprocess.run(["make", "-s", "-C", str(REPO / "support"), "install",
                    f"DESTDIR={tmp_path / 'make'}"], check=True, capture_output=True, timeout=60)
    assert install_support("--destdir", str(tmp_path / "cli")).returncode == 0
    made, installed = tree(tmp_path / "make"), tree(tmp_path / "cli")
    files = {path: entry for path, entry in installed.items() if entry[1]}
    assert files == {path: entry for path, entry in made.items() if entry[1]}
    assert set(files) >= {*EXPECTED, "var/lib/mender-orchestrator"}


@pytest.mark.skipif(not (REPO / "Makefile").exists(),
                    reason="the checkout's Makefile, not in the sdist")
def test_make_install_support_calls_the_command(tmp_path: Path) -> None:
    result = subprocess.run(["make", "-s", "-C", str(REPO), "install-support",
                             f"DESTDIR={tmp_path}", f"VENV={Path(sys.executable).parent.parent}"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert f"installed {tmp_path}/usr/share/mender/modules/v3/" in result.stdout
    assert {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()} == set(
        EXPECTED)
