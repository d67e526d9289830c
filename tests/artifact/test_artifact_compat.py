"""SPEC 7.3 on real Artifacts: may it go on this Component, is it already there, and what
``clears_artifact_provides`` removes."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator_core.artifact import (
    ArtifactHeader,
    check_compatible,
    clears,
    is_installed,
    provides_after_install,
    read_header,
)
from orchestrator_core.errors import IncompatibleArtifact

from . import artifact_builder as ab
from .support import FIXTURES, Made


def header_of(path: Path) -> ArtifactHeader:
    with open(path, "rb") as stream:
        return read_header(stream, source_name=str(path))


RTOS_V1 = header_of(FIXTURES / "rtos-v1.mender")


def test_device_type_must_be_the_component_type() -> None:
    check_compatible(RTOS_V1, "rtos", {"rootfs-image.rtos-interface.version": "rtos-v0"})
    with pytest.raises(IncompatibleArtifact) as info:
        check_compatible(RTOS_V1, "gateway", {})
    assert info.value.message == (
        f"Artifact rtos-v1 ({FIXTURES / 'rtos-v1.mender'}) is not for this Component: "
        f"artifact_depends.device_type is [rtos], the Component's device_type (component_type) "
        f"is gateway"
    )


def test_depends_on_previous_artifact_group_and_provides(made: dict[str, Made]) -> None:
    header = header_of(made["several"].path)  # -N rtos-v3 -G stable -d bootloader.version:2
    fitting = {"artifact_name": "rtos-v3", "artifact_group": "stable", "bootloader.version": "2"}
    check_compatible(header, "rtos-b", fitting)
    cases = [
        (
            {**fitting, "artifact_name": "rtos-v2"},
            "artifact_name being one of [rtos-v3], but the "
            "Component provides artifact_name=rtos-v2",
        ),
        (
            {**fitting, "artifact_group": "beta"},
            "artifact_group being one of [stable], but the Component provides artifact_group=beta",
        ),
        (
            {k: v for k, v in fitting.items() if k != "bootloader.version"},
            "bootloader.version being one of [2], but the Component does not provide it",
        ),
    ]
    for provides, expected in cases:
        with pytest.raises(
            IncompatibleArtifact, match=expected.replace("[", r"\[").replace(".", r"\.")
        ):
            check_compatible(header, "rtos", provides)


def test_already_installed() -> None:
    assert is_installed(RTOS_V1, {"rootfs-image.rtos-interface.version": "rtos-v1"})
    assert not is_installed(RTOS_V1, {"rootfs-image.rtos-interface.version": "rtos-v0"})
    assert not is_installed(RTOS_V1, {})


def test_already_installed_needs_every_provide(made: dict[str, Made]) -> None:
    header = header_of(made["several"].path)
    installed = {
        "rootfs-image.rtos-interface.version": "rtos-v4",
        "rootfs-image.rtos-interface.board": "rev-b",
    }
    assert is_installed(header, installed)
    assert not is_installed(header, {**installed, "rootfs-image.rtos-interface.board": "rev-a"})


def test_artifact_that_provides_nothing_of_its_own_compares_names(tmp_path: Path) -> None:
    path = tmp_path / "bare.mender"
    path.write_bytes(ab.build({"a.bin": b"a"}, name="bare-7").assemble())  # no type-info provides
    header = header_of(path)
    assert dict(header.type_provides) == {}
    assert is_installed(header, {"artifact_name": "bare-7", "rootfs-image.x.version": "1"})
    assert not is_installed(header, {"artifact_name": "bare-6"})


def test_clears_patterns() -> None:
    assert clears(("rootfs-image.rtos-interface.*",), "rootfs-image.rtos-interface.version")
    assert clears(("rootfs-image.*",), "rootfs-image.a.b.c")
    assert clears(("*",), "anything")
    assert clears(("a.*.version",), "a.x.y.version")
    assert not clears(("rootfs-image.rtos-interface.*",), "rootfs-image.other.version")
    assert not clears(("a.b",), "a.bc")
    assert not clears(("a?b",), "axb")  # only '*' is special
    assert not clears(("[ab]",), "a")
    assert not clears((), "x")


def test_provides_after_install() -> None:
    before = {
        "rootfs-image.rtos-interface.version": "rtos-v0",
        "rootfs-image.rtos-interface.extra": "old",
        "bootloader.version": "1",
    }
    assert provides_after_install(RTOS_V1, before) == {
        "artifact_name": "rtos-v1",
        "rootfs-image.rtos-interface.version": "rtos-v1",
        "bootloader.version": "1",
    }
