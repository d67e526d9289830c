"""`make deb`: the Debian package built from the repository, installed with dpkg into a clean
root, its files checked, its command run from there, and the real Mender client driving the
installed Update Module and command end to end.

Running the installed command needs the package's Debian dependencies on this machine
(`apt install ./mender-orchestrator_*.deb` brings them; the tests name what is missing).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from systems import REPO

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")

FILES = {
    "usr/bin/mender-orchestrator": 0o755,
    "usr/bin/mender-orchestrator-manifest-gen": 0o755,
    "usr/share/mender/modules/v3/mender-orchestrator-manifest": 0o755,
    "usr/share/mender/inventory/mender-inventory-mender-orchestrator": 0o755,
    "usr/share/mender-orchestrator/interfaces/v1/rootfs-image": 0o755,
    "usr/lib/systemd/system/mender-orchestrator-resume.service": 0o644,
    "usr/share/man/man1/mender-orchestrator.1.gz": 0o644,
    "usr/share/man/man1/mender-orchestrator-install.1.gz": 0o644,
    "usr/share/bash-completion/completions/mender-orchestrator": 0o644,
    "usr/share/doc/mender-orchestrator/copyright": 0o644,
    "etc/mender-orchestrator": 0o755,
    "var/lib/mender-orchestrator": 0o700,
}


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    result = subprocess.run([sys.executable, str(REPO / "support/debian/build_deb.py"), str(out)],
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip())


@pytest.fixture(scope="module")
def root(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean root with an empty dpkg database and the package installed into it."""
    root = tmp_path_factory.mktemp("root")
    (root / "var/lib/dpkg/updates").mkdir(parents=True)
    (root / "var/lib/dpkg/info").mkdir()
    (root / "var/lib/dpkg/status").touch()
    # the root holds no python3 or jq: dependencies are this machine's (checked below)
    subprocess.run(["dpkg", f"--root={root}", "--force-depends", "--force-not-root",
                    "--log=/dev/null", "-i", str(deb)], check=True, capture_output=True,
                   timeout=300)
    return root


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=True).stdout.strip()


def missing_dependencies(deb: Path) -> list[str]:
    names = [d.split()[0] for d in field(deb, "Depends").split(", ")]
    missing = []
    for name in dict.fromkeys(names):
        status = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", name],
                                capture_output=True, text=True, check=False).stdout
        if not status.endswith(" installed"):
            missing.append(name)
    return missing


@pytest.fixture(scope="module")
def runnable(deb: Path, root: Path) -> Path:
    missing = missing_dependencies(deb)
    if missing:
        pytest.skip("the package's dependencies are not installed: "
                    f"apt install {' '.join(missing)}")
    return root


def test_control(deb: Path) -> None:
    # `all` while every bundled wheel is pure Python (today: the Debian 12 floors), else the
    # build machine's
    arch = field(deb, "Architecture")
    machine = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                             check=True).stdout.strip()
    assert arch in {"all", machine}
    assert deb.name == f"mender-orchestrator_0.1.0-1_{arch}.deb"
    assert field(deb, "Package") == "mender-orchestrator"
    depends = field(deb, "Depends").split(", ")
    assert {"python3 (>= 3.11)", "python3-click", "python3-yaml", "jq"} <= set(depends)
    # Debian 12's pluggy (1.0) and urllib3 (1.26) are older than the floors: bundled
    for name in ("pluggy", "urllib3"):
        assert f"python3-{name}" not in depends
        assert f" {name} " in field(deb, "Description").replace("\n", " ")
    # the floors were lowered to Debian 12's stevedore (4.0) and zstandard (0.20); cryptography's
    # to 38 too, but a bundled distribution may need it newer (esptool 5 needs 43)
    for name in ("stevedore", "zstandard"):
        assert f"python3-{name}" in depends
        assert f" {name} " not in field(deb, "Description").replace("\n", " ")


def test_files_in_their_paths_with_their_modes(root: Path) -> None:
    for path, mode in FILES.items():
        assert stat.S_IMODE((root / path).stat().st_mode) == mode, path
    listed = subprocess.run(["dpkg", f"--root={root}", "-L", "mender-orchestrator"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert {f"/{path}" for path in FILES} <= set(listed)
    unit = (root / "usr/lib/systemd/system/mender-orchestrator-resume.service").read_text()
    assert "ExecStart=/usr/bin/mender-orchestrator resume\n" in unit
    module = root / "usr/share/mender/modules/v3/mender-orchestrator-manifest"
    assert module.read_bytes() == (
        REPO / "orchestrator_core/support_files/modules/v3/mender-orchestrator-manifest"
    ).read_bytes()
    lib = root / "usr/lib/mender-orchestrator"
    for name in ("orchestrator_core", "mender_orchestrator_canbus", "mender_orchestrator_i2c",
                 "mender_orchestrator_mcuboot", "smpclient",
                 "pluggy", "udsoncan"):
        assert (lib / name).is_dir(), name


def test_the_installed_command_runs(runnable: Path, tmp_path: Path) -> None:
    command = runnable / "usr/bin/mender-orchestrator"
    env = {"PATH": "/usr/bin:/bin", "MENDER_ORCHESTRATOR_CONF_DIR": str(tmp_path),
           "MENDER_ORCHESTRATOR_DATA_DIR": str(runnable / "usr/share/mender-orchestrator"),
           "MENDER_ORCHESTRATOR_DATASTORE_DIR": str(tmp_path),
           # the checkout's packages must not leak in: the command is isolated (-I)
           "PYTHONPATH": str(REPO)}
    version = subprocess.run([str(command), "--version"], env=env, capture_output=True,
                             text=True, check=False)
    assert version.stdout == "mender-orchestrator, version 0.1.0\n", version.stderr
    (tmp_path / "topology.yaml").write_text(
        "api_version: mender/v1\nkind: topology\nsystem_type: deb\ncomponents:\n"
        "  - component_type: gateway\n    interface: rootfs-image\n")
    drivers = subprocess.run([str(command), "drivers"], env=env, capture_output=True,
                             text=True, check=False)
    assert drivers.returncode == 0, drivers.stderr
    assert "  canbus = mender_orchestrator_canbus.driver:CanbusDriver\n" in drivers.stdout
    assert "  i2c = mender_orchestrator_i2c.driver:I2CDriver\n" in drivers.stdout
    assert "  mcuboot = mender_orchestrator_mcuboot.driver:McubootDriver\n" in drivers.stdout
    assert "  rootfs-image\n" in drivers.stdout
    completion = subprocess.run(["bash", "-c", f". {runnable}/usr/share/bash-completion/"
                                 "completions/mender-orchestrator && complete -p "
                                 "mender-orchestrator"], capture_output=True, text=True,
                                check=False)
    assert completion.returncode == 0, completion.stderr
    if shutil.which("man") is None:
        return
    man = subprocess.run(["man", "-l", str(runnable / "usr/share/man/man1/"
                                           "mender-orchestrator-install.1.gz")],
                         env={**os.environ, "MANWIDTH": "100"}, capture_output=True, text=True,
                         check=False)
    assert man.returncode == 0 and "--stop-before" in man.stdout.replace("\u2010", "-")


def test_the_mender_client_drives_the_installed_files(runnable: Path) -> None:
    """The end-to-end test with the real Mender client, run against the installed Update
    Module, rootfs-image Interface and command instead of the checkout's."""
    from mender_client import unavailable

    if unavailable() is not None:
        pytest.skip(str(unavailable()))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
         str(REPO / "tests/test_mender_client_e2e.py"), "-k",
         "system_device_is_updated_through_its_own_client or "
         "reports_success_once_every_component_committed"],
        env={**os.environ, "MENDER_ORCHESTRATOR_E2E_ROOT": str(runnable)}, cwd=REPO,
        capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "2 passed" in result.stdout
