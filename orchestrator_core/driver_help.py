"""``mender-orchestrator drivers NAME``: what NAME resolves to, and the arguments it takes."""

from __future__ import annotations

from pathlib import Path

from orchestrator_core import api_version, args, drivers


def describe(name: str, data_dir: Path) -> list[str]:
    """Lines for people; ``DriverNotFound`` when NAME is neither kind of Interface."""
    found = drivers.resolve(name, data_dir)
    if found.kind == "executable":
        return [
            f"{name}: executable Interface {found.target}",
            "Its interface_args are passed to it as they are; see its documentation.",
        ]
    factory = drivers.load_factory(name)
    declared = getattr(factory, api_version.ATTRIBUTE, None)
    lines = [
        f"{name}: in-process driver {found.target}",
        f"Driver API: it declares {declared or 'nothing (taken as 1.0)'}; this "
        f"mender-orchestrator provides {api_version.DRIVER_API_VERSION}",
        "",
    ]
    parser = args.parser_of(factory)
    if parser is None:
        lines.append(
            f"It exposes no {args.PARSER_ATTRIBUTE}: see its documentation for its interface_args."
        )
    else:
        lines.append("interface_args:")
        lines.extend(parser.format_help().rstrip("\n").splitlines())
    return lines
