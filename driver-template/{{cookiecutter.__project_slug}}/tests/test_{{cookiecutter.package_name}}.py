"""The ``{{ cookiecutter.driver_name }}`` driver, tested through the orchestrator itself.

Run with ``pytest`` after ``pip install -e '.[test]'``. The fixtures and the marker come from
the orchestrator's pytest plugin (``orchestrator_core.testing``, loaded by pytest on its own):

- ``pytestmark`` below runs every check of ``mender-orchestrator check-interface`` (queries, a
  full install, a rollback from each point the engine may roll back from, Cleanup twice,
  deadlines, output, the File API) as one test item each, against ``device`` (tests/conftest.py);
- ``artifact_factory`` builds real Artifacts, ``deploy`` installs one through
  ``mender-orchestrator install`` in a private System, ``interface_hooks`` calls single hooks.

Nothing here knows how the device works: replace ``device`` and ``device_args`` in
tests/conftest.py when the driver talks to your real device, and these tests still apply.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from orchestrator_core import drivers
from orchestrator_core.driver_api import Component, ConfigError, InterfaceTimeout
from orchestrator_core.testing.kit import ArtifactFactory, Deployer, Hooks, HooksFactory

DRIVER = "{{ cookiecutter.driver_name }}"
COMPONENT_TYPE = "my_component"

pytestmark = pytest.mark.mender_interface(
    DRIVER, component_type=COMPONENT_TYPE, args=lambda device_args: device_args
)


@pytest.fixture
def hooks(interface_hooks: HooksFactory, device_args: list[str]) -> Hooks:
    return interface_hooks(DRIVER, device_args, COMPONENT_TYPE)


def test_the_entry_point_is_installed(tmp_path: Path) -> None:
    found = drivers.resolve(DRIVER, tmp_path)
    assert found.kind == "driver"
    assert found.target.endswith(".driver:{{ cookiecutter.__class_name }}")


def test_an_update_installs_the_new_version(
    artifact_factory: ArtifactFactory, deploy: Deployer, device_args: list[str]
) -> None:
    artifact = artifact_factory(
        "2.0",
        payload_type=DRIVER,
        component_type=COMPONENT_TYPE,
        files={"firmware.bin": b"new firmware\n" * 1000},
    )
    result = deploy(artifact, args=device_args)
    assert result.exit_code == 0, result.output
    assert result.version_before != "2.0"
    assert result.version_after == "2.0"
    assert result.calls[0] == "Download" and result.calls[-2:] == ["ArtifactCommit", "Cleanup"]


def test_a_download_past_its_deadline_installs_nothing(
    artifact_factory: ArtifactFactory, hooks: Hooks
) -> None:
    artifact = artifact_factory("2.0", payload_type=DRIVER, component_type=COMPONENT_TYPE)
    before = hooks.version()
    try:  # the deadline has passed by the time the first chunk is in
        hooks.state("download", artifact, timeout_seconds=0)
    except InterfaceTimeout as exc:  # a driver that streams the payload stops...
        assert "InterfaceTimeoutSeconds" in str(exc)
    # ...one that leaves it to the engine has nothing to stop; neither installs anything
    hooks.state("cleanup", artifact)
    assert hooks.version() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "argument --device is missing"),
        (("--device=relative/dir",), "argument --device: expected an absolute path"),
        (("--device=/dev/x", "--speed=9"), "unrecognized arguments: --speed=9"),
        (("--device=/dev/x", "--device=/dev/y"), "argument --device: given twice"),
    ],
)
def test_bad_interface_args_are_named(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        drivers.load(Component(COMPONENT_TYPE, DRIVER, args), tmp_path)
    assert str(caught.value).startswith(f"{COMPONENT_TYPE}[0] (interface {DRIVER})")
    assert message in str(caught.value)
