"""What each distribution ships: the licence, the metadata, one version, complete sdists
whose tests run from the unpacked sdist, shell completion and man pages."""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

import pytest
from systems import REPO

from orchestrator_core.manpages import write_pages

# the drivers' sources are the checkout's, not in the core's sdist
pytestmark = pytest.mark.skipif(not (REPO / "drivers").is_dir(), reason="needs the checkout")

LICENSE = (REPO / "LICENSE").read_text()
CLI = [sys.executable, "-m", "orchestrator_core"]
PROJECTS = {"mender_orchestrator_py": REPO, "mender_orchestrator_canbus": REPO / "drivers/canbus",
            "mender_orchestrator_i2c": REPO / "drivers/i2c",
            "mender_orchestrator_mcuboot": REPO / "drivers/mcuboot",
            "mender_orchestrator_esp32": REPO / "drivers/esp32"}


@pytest.fixture(scope="module")
def sdists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each distribution's sdist, built as a release would, unpacked."""
    out = tmp_path_factory.mktemp("sdists")
    unpacked = {}
    for name, project in PROJECTS.items():
        subprocess.run([sys.executable, "-m", "build", "--sdist", "-o", str(out), str(project)],
                       check=True, capture_output=True, timeout=300)
        with tarfile.open(out / f"{name}-0.1.0.tar.gz") as tar:
            tar.extractall(out, filter="data")
        unpacked[name] = out / f"{name}-0.1.0"
    return unpacked


def metadata(root: Path) -> email.message.Message:
    return email.message_from_string((root / "PKG-INFO").read_text())


def test_every_distribution_has_the_license(sdists: dict[str, Path]) -> None:
    template = REPO / "driver-template" / "{{cookiecutter.__project_slug}}"
    assert (template / "LICENSE").read_text() == LICENSE
    assert "Apache License\n" in LICENSE and "Version 2.0, January 2004" in LICENSE
    for name, root in sdists.items():
        assert (root / "LICENSE").read_text() == LICENSE, name
        info = metadata(root)
        assert info["License-Expression"] == "Apache-2.0", name
        assert info.get_all("License-File") == ["LICENSE"], name
        assert "Programming Language :: Python :: 3.11" in info.get_all("Classifier"), name
        assert info.get_all("Project-URL"), name


def test_drivers_bound_the_core(sdists: dict[str, Path]) -> None:
    for name in ("mender_orchestrator_canbus", "mender_orchestrator_i2c",
                 "mender_orchestrator_mcuboot", "mender_orchestrator_esp32"):
        requires = metadata(sdists[name]).get_all("Requires-Dist")
        assert "mender-orchestrator-py<0.2,>=0.1" in requires, requires


def test_core_sdist_tests_run_from_the_sdist(sdists: dict[str, Path]) -> None:
    root = sdists["mender_orchestrator_py"]
    assert (root / "orchestrator_core/support_files/modules/v3/mender-orchestrator-manifest"
            ).is_file()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
         "tests/test_install_support.py", "-k", "every_file or support_makefile"],
        cwd=root, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_i2c_sdist_tests_run_from_the_sdist(sdists: dict[str, Path]) -> None:
    root = sdists["mender_orchestrator_i2c"]
    tests = sorted(path.name for path in (root / "tests").glob("test_*.py"))
    assert tests == sorted(p.name for p in (REPO / "drivers/i2c/tests").glob("test_*.py"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x",
         "tests/test_i2c_cli.py"],
        cwd=root, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout


def test_canbus_sdist_has_its_tests(sdists: dict[str, Path]) -> None:
    root = sdists["mender_orchestrator_canbus"]
    shipped = {p.name for p in (root / "tests").iterdir() if p.suffix == ".py"}
    assert shipped == {p.name for p in (REPO / "drivers/canbus/tests").iterdir()
                       if p.suffix == ".py"}


def test_mcuboot_sdist_has_its_tests(sdists: dict[str, Path]) -> None:
    root = sdists["mender_orchestrator_mcuboot"]
    shipped = {p.name for p in (root / "tests").iterdir() if p.suffix == ".py"}
    assert shipped == {p.name for p in (REPO / "drivers/mcuboot/tests").iterdir()
                       if p.suffix == ".py"}
    assert (root / "mender_orchestrator_mcuboot" / "py.typed").is_file()


def test_esp32_sdist_has_its_tests_and_bounds_esptool(sdists: dict[str, Path]) -> None:
    root = sdists["mender_orchestrator_esp32"]
    shipped = {p.name for p in (root / "tests").iterdir() if p.suffix == ".py"}
    assert shipped == {p.name for p in (REPO / "drivers/esp32/tests").iterdir()
                       if p.suffix == ".py"}
    assert "esptool<6,>=5.6" in metadata(root).get_all("Requires-Dist")


def test_version_is_the_installed_metadata() -> None:
    result = subprocess.run([*CLI, "--version"], capture_output=True, text=True, check=True)
    assert result.stdout == f"mender-orchestrator, version {version('mender-orchestrator-py')}\n"
    import mender_orchestrator_i2c

    import orchestrator_core
    assert orchestrator_core.__version__ == version("mender-orchestrator-py")
    assert mender_orchestrator_i2c.__version__ == version("mender-orchestrator-i2c")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script(shell: str) -> None:
    result = subprocess.run([*CLI, "completion", shell], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert f"_MENDER_ORCHESTRATOR_COMPLETE={shell}_complete" in result.stdout
    if shell == "bash":
        syntax = subprocess.run(["bash", "-n"], input=result.stdout, text=True, check=False)
        assert syntax.returncode == 0


def test_completion_completes_commands_and_options() -> None:
    def complete(*words: str) -> list[str]:
        env = {**os.environ, "_MENDER_ORCHESTRATOR_COMPLETE": "bash_complete",
               "COMP_WORDS": " ".join(["mender-orchestrator", *words]),
               "COMP_CWORD": str(len(words))}
        result = subprocess.run([*CLI], env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    assert complete("sta") == ["plain,status"]
    assert "plain,--stop-before" in complete("install", "--st")
    assert complete("completion", "z") == ["plain,zsh"]


def test_completion_refuses_other_shells() -> None:
    result = subprocess.run([*CLI, "completion", "tcsh"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 2
    assert "'tcsh' is not one of 'bash', 'zsh', 'fish'" in result.stderr


def test_man_pages_for_every_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    written = {path.name for path in write_pages(tmp_path)}
    assert {"mender-orchestrator.1", "mender-orchestrator-install.1",
            "mender-orchestrator-install-support.1", "mender-orchestrator-completion.1",
            "mender-orchestrator-artifact-inspect.1", "mender-orchestrator-status.1"} <= written
    page = (tmp_path / "mender-orchestrator-install.1").read_text()
    assert page.startswith('.TH "MENDER-ORCHESTRATOR-INSTALL" "1" ')
    assert "\\fB--stop-before" in page
    assert '"1970-01-01"' in page
    if shutil.which("man") is None:  # man-db is not in a minimal CI image: the roff is checked
        return
    rendered = subprocess.run(["man", "-l", str(tmp_path / "mender-orchestrator.1")],
                              env={**os.environ, "MANWIDTH": "100", "MAN_KEEP_FORMATTING": ""},
                              capture_output=True, text=True, check=False)
    assert rendered.returncode == 0, rendered.stderr
    assert "mender-orchestrator-install(1)" in rendered.stdout.replace("\u2010", "-")
