"""May this Artifact go on that Component, and is it already there (SPEC 7.3)?"""

from __future__ import annotations

import re
from collections.abc import Mapping

from orchestrator_core.artifact.header import ArtifactHeader, ProvideValue
from orchestrator_core.errors import IncompatibleArtifact


def _listed(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(values) + "]"


def check_compatible(
    header: ArtifactHeader, component_type: str, provides: Mapping[str, str]
) -> None:
    """Raise ``IncompatibleArtifact`` naming the failing depends key and both values.

    ``artifact_depends.device_type`` must contain the Component's ``component_type`` (its
    device type); every other depends key (``artifact_name``, ``artifact_group`` and the
    type-info ones) must be among the Component's Provides with one of the listed values.
    """
    what = f"Artifact {header.name} ({header.source_name})"
    if component_type not in header.device_types:
        raise IncompatibleArtifact(
            f"{what} is not for this Component: artifact_depends.device_type is "
            f"{_listed(header.device_types)}, the Component's device_type (component_type) is "
            f"{component_type}"
        )
    for key, accepted in sorted(header.depends.items()):
        actual = provides.get(key)
        if actual not in accepted:
            has = "does not provide it" if actual is None else f"provides {key}={actual}"
            raise IncompatibleArtifact(
                f"{what} depends on {key} being one of {_listed(accepted)}, but the Component {has}"
            )


def _held(value: ProvideValue, actual: str | None) -> bool:
    # a Component's Provides are single values: a list is held only as its one element
    if isinstance(value, tuple):
        return len(value) == 1 and actual == value[0]
    return actual == value


def is_installed(header: ArtifactHeader, provides: Mapping[str, str]) -> bool:
    """True when the Component's Provides already hold every value the Artifact provides.

    The values compared are type-info's ``artifact_provides`` (what Interfaces report, e.g.
    ``rootfs-image.<interface>.version``); an Artifact whose type-info provides nothing is
    compared on ``artifact_name`` (and ``artifact_group``) instead.
    """
    wanted: Mapping[str, ProvideValue] = header.type_provides or {
        key: value
        for key, value in header.provides.items()
        if key in ("artifact_name", "artifact_group")
    }
    return all(_held(value, provides.get(key)) for key, value in wanted.items())


def _pattern(glob: str) -> re.Pattern[str]:
    # Mender's clears_artifact_provides patterns: '*' matches any run of characters (dots
    # included); nothing else is special
    return re.compile(".*".join(re.escape(part) for part in glob.split("*")), re.DOTALL)


def clears(patterns: tuple[str, ...] | list[str], key: str) -> bool:
    """Whether installing an Artifact with these ``clears_artifact_provides`` drops ``key``."""
    return any(_pattern(glob).fullmatch(key) for glob in patterns)


def provides_after_install(header: ArtifactHeader, current: Mapping[str, str]) -> dict[str, str]:
    """The Component's Provides once the Artifact is installed: cleared keys dropped, the
    Artifact's own provides added (a list value is stored comma-separated)."""
    result = {
        key: value for key, value in current.items() if not clears(header.clears_provides, key)
    }
    for key, value in header.provides.items():
        result[key] = ",".join(value) if isinstance(value, tuple) else value
    return result
