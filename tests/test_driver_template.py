"""driver-template/: what `cookiecutter driver-template` produces is a working driver package.

The package is generated with ``--no-input``, installed with the core into a fresh virtual
environment (no system site-packages, nothing from the development environment), and then
used the way a vendor would: its own tests, ``mender-orchestrator drivers``, and a deployment
of a real ``.mender`` file through ``mender-orchestrator install``.

Building wheels dominates the time. To keep it low the environment is made without pip (the
development pip drives it through ``--python``), and the build requirements both
pyproject.toml files declare are installed into it once, instead of into one isolated build
environment per package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "driver-template"
BIN = Path(sys.executable).parent
GENERATED = "mender-orchestrator-example"  # the defaults: driver "example"
NOT_THE_CORE = (".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
                "drivers", "driver-template", "tests")  # fmt: skip


def run(
    args: list[str | Path], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip


def cookiecutter(output: Path, scratch: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``cookiecutter --no-input`` of the template into ``output``. cookiecutter (2.7) renders
    each hook into a file of ``$TMPDIR`` and never removes it: ``scratch`` takes it, so the
    tests leave nothing in the machine's temporary directory."""
    scratch.mkdir(exist_ok=True)
    return run([BIN / "cookiecutter", "--no-input", TEMPLATE, "--output-dir", output, *options],
               env={**os.environ, "TMPDIR": str(scratch)})  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that could leak the development environment in."""
    leaking = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in leaking and not k.startswith("MENDER_ORCHESTRATOR_")
    }
    env.update(extra)
    return env


@dataclass(frozen=True)
class Installed:
    package: Path  # the generated source tree
    venv: Path

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name


def build_requirements(*projects: Path) -> list[str]:
    requirements: set[str] = set()
    for project in projects:
        with (project / "pyproject.toml").open("rb") as stream:
            requirements.update(tomllib.load(stream)["build-system"]["requires"])
    return sorted(requirements)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("template")
    generated = cookiecutter(root, tmp_path_factory.mktemp("scratch"))
    assert generated.returncode == 0, generated.stderr
    package = root / GENERATED
    assert package.is_dir(), sorted(p.name for p in root.iterdir())

    # setuptools builds in the source tree (build/, *.egg-info): build the core from a copy
    core = root / "core"
    shutil.copytree(REPO, core, ignore=shutil.ignore_patterns(*NOT_THE_CORE))

    venv = root / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", venv], env=clean_env())
    assert made.returncode == 0, made.stderr
    pip: list[str | Path] = [BIN / "pip", "--python", venv / "bin" / "python", "install", "-q"]
    steps: list[list[str | Path]] = [
        [*pip, *build_requirements(core, package)],
        [*pip, "--no-build-isolation", core, f"{package}[test]"],
    ]
    for step in steps:
        result = run(step, env=clean_env())
        assert result.returncode == 0, result.stdout + result.stderr
    return Installed(package, venv)


def test_fresh_environment_holds_only_what_was_installed(installed: Installed) -> None:
    probe = run(
        [installed.bin("python"), "-c", "import sys, orchestrator_core; "
         "print(sys.prefix == sys.base_prefix, orchestrator_core.__file__)"],
        env=clean_env(), cwd=installed.venv,  # not the checkout: `-c` imports from the cwd
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    in_base, location = probe.stdout.split()
    assert in_base == "False"
    assert location.startswith(str(installed.venv))  # a real install, not a source tree
    listed = run([installed.bin("python"), "-m", "pip", "--version"], env=clean_env(),
                 cwd=installed.venv)  # fmt: skip
    assert listed.returncode != 0  # no pip, no system site-packages: a bare environment


def test_generated_tests_pass_as_generated(installed: Installed) -> None:
    result = run(
        [installed.bin("python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=installed.package,
        env=clean_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_generated_code_is_lint_clean(installed: Installed) -> None:
    for check in (["check"], ["format", "--check"]):  # with the package's own ruff settings
        result = run([BIN / "ruff", *check, "."], cwd=installed.package)
        assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_passes_mypy_strict_against_the_installed_core(
    installed: Installed,
) -> None:
    # the core is an ordinary install in that environment: its py.typed is what lets mypy
    # check the driver's use of orchestrator_core.driver_api instead of treating it as Any
    result = run(
        [BIN / "mypy", "--strict", "--no-incremental", "--python-executable",
         installed.bin("python"), "mender_orchestrator_example", "tests"],
        cwd=installed.package, env=clean_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


class System:
    """A System on disk using the generated driver, reached through the environment."""

    def __init__(self, root: Path, installed: Installed) -> None:
        self.root = root
        self.installed = installed
        self.device = root / "device"
        for directory in ("etc", "usr-share", "var-lib", "device"):
            (root / directory).mkdir(parents=True)
        (self.device / "serial").write_text("SN-42\n")
        (self.device / "firmware.bin").write_bytes(b"factory firmware")
        (self.device / "version").write_text("1.0\n")
        (root / "var-lib" / "topology.yaml").write_text(
            'api_version: "mender/v1"\nkind: "topology"\nsystem_type: "vendor-box"\n'
            "components:\n  - component_type: my_component\n    interface: example\n"
            f'    interface_args: ["--device={self.device}"]\n'
        )

    def cli(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        env = clean_env(
            MENDER_ORCHESTRATOR_CONF_DIR=str(self.root / "etc"),
            MENDER_ORCHESTRATOR_DATA_DIR=str(self.root / "usr-share"),
            MENDER_ORCHESTRATOR_DATASTORE_DIR=str(self.root / "var-lib"),
        )
        return run([self.installed.bin("mender-orchestrator"), *args], env=env, cwd=self.root)


@pytest.fixture
def system(tmp_path: Path, installed: Installed) -> System:
    return System(tmp_path / "system", installed)


def test_drivers_command_lists_the_generated_driver(system: System) -> None:
    result = system.cli("drivers")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    target = "mender_orchestrator_example.driver:ExampleDriver"
    assert f"  my_component: interface example -> driver {target}" in lines
    assert f"  example = {target}" in lines


@pytest.mark.skipif(shutil.which("mender-artifact") is None, reason="needs mender-artifact")
def test_deployment_through_the_generated_driver(system: System) -> None:
    payload = system.root / "firmware.bin"
    payload.write_bytes(b"vendor firmware 2.0")
    artifact = system.root / "example-2.0.mender"
    written = run(
        ["mender-artifact", "write", "module-image", "-T", "example", "-t", "my_component",
         "-n", "example-fw-2.0", "--software-version", "2.0", "-f", payload, "-o", artifact]
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    manifest = system.root / "manifest.yaml"
    manifest.write_text(
        'api_version: "mender/v1"\nkind: "manifest"\nname: "box-2.0"\n'
        'system_types_compatible: ["vendor-box"]\ncomponent_types:\n  my_component:\n'
        f"    artifact_name: example-fw-2.0\n    artifact_path: {artifact}\n"
        "    update_strategy: {order: 10}\n"
    )

    result = system.cli("install", manifest)

    assert result.returncode == 0, result.stderr
    assert (system.device / "firmware.bin").read_bytes() == b"vendor firmware 2.0"
    assert (system.device / "running").read_text().strip() == "2.0"
    shown = system.cli("show-provides")
    assert shown.stdout.splitlines() == [
        "my_component.SN-42.device_type=my_component",
        "my_component.SN-42.rootfs-image.example.version=2.0",
    ]


def test_check_interface_passes_on_the_generated_driver(system: System) -> None:
    result = system.cli("check-interface", "example", "--component-type", "my_component",
                        f"--arg=--device={system.device}", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0, [c for c in report["checks"] if c["status"] != "pass"]
    assert report["kind"] == "driver"
    assert report["version_before"] == report["version_after"] == "1.0"
    assert (system.device / "version").read_text().strip() == "1.0"


def test_generator_refuses_a_bad_driver_name(tmp_path: Path) -> None:
    output = tmp_path / "output"
    output.mkdir()
    result = cookiecutter(output, tmp_path / "scratch", "driver_name=Seat Heater")
    assert result.returncode != 0
    assert "driver_name 'Seat Heater': use lowercase letters" in result.stderr + result.stdout
    assert not any(output.iterdir())


# --------------------------------------------------------------------------- the test kit

FILE_DEVICE = REPO / "tests" / "template_device"  # a vendor's rewrite: a file-backed device


def vendor_copy(installed: Installed, root: Path, rollback: str | None = None) -> Path:
    """The generated package with its device replaced as a vendor would: driver.py and the
    tests' device fixtures rewritten, the tests left as generated."""
    package = root / GENERATED
    shutil.copytree(installed.package, package)
    driver = (FILE_DEVICE / "driver.py").read_text()
    if rollback is not None:
        driver = driver.replace(ROLLBACK_BODY, rollback)
    (package / "mender_orchestrator_example" / "driver.py").write_text(driver)
    shutil.copy(FILE_DEVICE / "device_conftest.py", package / "tests" / "conftest.py")
    return package


ROLLBACK_BODY = (
    "        self.device.flash((directory / \"old\").read_bytes(),\n"
    "                          (directory / \"old.version\").read_text())\n"
)


def vendor_tests(installed: Installed, package: Path) -> subprocess.CompletedProcess[str]:
    # the copy comes first on sys.path, also in the CLI that `deploy` starts: the installed
    # entry point then loads the vendor's driver.py
    return run(
        [installed.bin("python"), "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q"],
        cwd=package, env=clean_env(PYTHONPATH=str(package)),
    )  # fmt: skip


def test_generated_tests_use_the_kit(installed: Installed) -> None:
    result = run(
        [installed.bin("python"), "-m", "pytest", "-p", "no:cacheprovider", "-q",
         "--collect-only"], cwd=installed.package, env=clean_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for check in ("identity-stable", "rollback-after-ArtifactInstall", "cleanup-twice",
                  "file-api-tmp-only"):  # fmt: skip
        assert f"::test_mender_interface[{check}]" in result.stdout, result.stdout


def test_generated_tests_pass_with_a_real_device_that_behaves(
    installed: Installed, tmp_path: Path
) -> None:
    package = vendor_copy(installed, tmp_path)
    result = vendor_tests(installed, package)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED tests/test_mender_orchestrator_example.py::test_mender_interface[install]" \
        in result.stdout  # fmt: skip
    # no reboot: those rollback points are not on this device's path
    assert "rollback-after-ArtifactReboot: not on this Interface's path" in result.stdout


def test_a_rollback_that_does_nothing_fails_the_check_that_names_it(
    installed: Installed, tmp_path: Path
) -> None:
    package = vendor_copy(installed, tmp_path, rollback="        pass\n")
    result = vendor_tests(installed, package)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = sorted(line.split("::")[1].split(" ")[0] for line in result.stdout.splitlines()
                    if line.startswith("FAILED "))  # fmt: skip
    assert failed == ["test_mender_interface[rollback-after-ArtifactCommit]",
                      "test_mender_interface[rollback-after-ArtifactInstall]"], result.stdout
    message = next(line for line in result.stdout.splitlines()
                   if line.startswith("check-interface rollback-after-ArtifactInstall"))
    assert message.startswith("check-interface rollback-after-ArtifactInstall FAILED: after the "
                              "rollback path (Download, ArtifactInstall, ArtifactRollback, ")
    assert message.endswith(", not the previous version 1.0")


def test_the_generated_package_passes_mypy_strict(installed: Installed) -> None:
    result = run(
        [BIN / "mypy", "--strict", "--python-executable", installed.bin("python"), "."],
        cwd=installed.package,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
