"""``orchestrator_core.testing``: the pytest plugin for driver packages (and executables).

pytest loads it through the ``pytest11`` entry point of mender-orchestrator-py, so a driver
package's tests need nothing but pytest. It gives:

- ``artifact_factory``: ``artifact_factory("2.0", payload_type=..., component_type=...,
  files={"firmware.bin": b"..."})`` builds a real .mender file;
- ``deploy``: ``deploy(artifact, interface=..., args=[...])`` installs it on one Component
  through ``mender-orchestrator install`` in a private System under ``tmp_path``, and returns
  the exit code, the output, the states the engine ran and the versions before and after;
- ``interface_hooks``: ``interface_hooks(interface, args, component_type)`` calls single hooks
  with a real ``InterfaceContext``, File API directory and payload (``executable=`` installs
  an executable Interface first);
- the ``mender_interface`` marker: one line in a test module runs every check of
  ``mender-orchestrator check-interface`` as its own test item::

      pytestmark = pytest.mark.mender_interface(
          "my-driver", component_type="my_component",
          args=lambda device: [f"--device={device}"],  # parameters name fixtures
      )

  ``args`` is a list of strings, or a callable whose parameters are fixture names. Keywords
  ``executable`` (an executable Interface to install first), ``timeout_seconds``
  (InterfaceTimeoutSeconds) and ``artifacts`` (check-interface's ``--artifact`` files, for a
  device that takes real firmware only: paths, or a callable of fixtures) are optional. The
  checks run once per module, on the first item; each item then reports its own check: a
  failure names the check and the defect.

Loaded in every pytest run of every project in the environment: everything beyond pytest is
imported inside the fixtures.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from orchestrator_core.testing.kit import ArtifactFactory, Deployer, Hooks, HooksFactory

MARKER = "mender_interface"
# every check of check-interface, in the order it reports them (see conformance/checks.py)
CHECKS = (
    "identity-valid", "identity-stable", "provides-version-key", "provides-no-device-type",
    "provides-stable", "queries-valid", "rollback-after-ArtifactInstall",
    "rollback-after-ArtifactReboot", "rollback-after-ArtifactVerifyReboot",
    "rollback-after-ArtifactCommit", "walk", "download", "install", "artifact-failure",
    "cleanup-twice", "left-as-found", "deadline", "output-size", "file-api-tmp-only",
)  # fmt: skip
# the checks of the queries: when one fails, the walks (and their checks) do not run
QUERIES = CHECKS[:6]
_REPORT = pytest.StashKey[Any]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(interface, *, component_type, args=(), executable=None, "
        "timeout_seconds=None, artifacts=()): run the check-interface conformance checks on "
        "this Interface, one test item per check (orchestrator_core.testing)",
    )


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def artifact_factory(tmp_path: Path) -> ArtifactFactory:
    """Builds module-image Artifacts from bytes."""
    from orchestrator_core.testing.kit import ArtifactFactory

    directory = tmp_path / "artifacts"
    directory.mkdir()
    return ArtifactFactory(directory)


@pytest.fixture
def deploy(tmp_path: Path) -> Deployer:
    """Installs an Artifact on one Component through the real CLI, in a private System."""
    from orchestrator_core.testing.kit import Deployer

    return Deployer(tmp_path / "deploy")


@pytest.fixture
def interface_hooks(tmp_path: Path) -> HooksFactory:
    """``interface_hooks(interface, args, component_type, timeout_seconds=30,
    executable=None)``: calls single hooks of one Component's driver."""
    from orchestrator_core.testing.kit import Hooks

    count = itertools.count(1)

    def make(interface: str, args: Sequence[str], component_type: str,
             timeout_seconds: float = 30.0, executable: Path | None = None) -> Hooks:
        return Hooks(tmp_path / f"hooks-{next(count)}", interface, args, component_type,
                     timeout_seconds, executable)

    return make


# --------------------------------------------------------------------------- the marker


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    if isinstance(collector, pytest.Module) and report.passed:
        if collector.get_closest_marker(MARKER) is not None:
            report.result.extend(
                pytest.Function.from_parent(collector, name=f"test_{MARKER}[{check}]",
                                            callobj=_check_test(check))
                for check in CHECKS
            )
    return report


def _check_test(check: str) -> Callable[[pytest.FixtureRequest], None]:
    def test(request: pytest.FixtureRequest) -> None:
        report = _report(request)
        if isinstance(report, str):
            pytest.fail(report, pytrace=False)
        found = next((c for c in report.checks if c.name == check), None)
        if found is None:
            failed = [c.name for c in report.checks if c.status == "fail" and c.name in QUERIES]
            if failed:
                pytest.skip(f"{check}: not run, because {', '.join(failed)} failed first")
            if check.startswith("rollback-after-"):
                pytest.skip(f"{check}: not on this Interface's path (NeedsArtifactReboot)")
            if check != "walk":  # reported only when a walk stopped early
                pytest.skip(f"{check}: not reported by check-interface")
        elif found.status == "fail":
            pytest.fail(f"check-interface {check} FAILED: {found.detail}", pytrace=False)
        elif found.status == "skip":
            pytest.skip(f"{check}: {found.detail}")

    test.__doc__ = f"check-interface: {check}"
    return test


def _report(request: pytest.FixtureRequest) -> Any:
    """The module's conformance report, made by the first of its check items (or why it
    could not be made)."""
    module = request.node.getparent(pytest.Module)
    assert module is not None
    if _REPORT not in module.stash:
        module.stash[_REPORT] = _run(request)
    return module.stash[_REPORT]


def _run(request: pytest.FixtureRequest) -> Any:
    from orchestrator_core.errors import OrchestratorError
    from orchestrator_core.testing.kit import conformance

    marker = request.node.get_closest_marker(MARKER)
    assert marker is not None
    if len(marker.args) != 1 or "component_type" not in marker.kwargs:
        raise pytest.UsageError(f"{MARKER}: expected {MARKER}(interface, component_type=..., "
                                f"args=...), got args={marker.args} kwargs={marker.kwargs}")
    args = _value(request, marker.kwargs.get("args", ()))
    artifacts = _value(request, marker.kwargs.get("artifacts", ()))
    directory = request.getfixturevalue("tmp_path") / "check-interface"
    try:
        return conformance(directory, marker.args[0], marker.kwargs["component_type"],
                           [str(a) for a in args], marker.kwargs.get("executable"),
                           marker.kwargs.get("timeout_seconds"), artifacts)
    except OrchestratorError as exc:
        return f"check-interface could not start: {exc.message}"


def _value(request: pytest.FixtureRequest, given: Any) -> Any:
    """A marker keyword's value; a callable is called with the fixtures its parameters name."""
    if not callable(given):
        return given
    names = inspect.signature(given).parameters
    return given(**{name: request.getfixturevalue(name) for name in names})
