"""The global -c/--config, --data-dir, --datastore and --topology-dir options: each wins over
its environment variable, which wins over the default; all are shown in --help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from systems import SIMULATED_UNIT, System

TOPOLOGY = (
    "api_version: mender/v1\nkind: topology\nsystem_type: s\ncomponents:\n"
    "  - component_type: a\n    interface: unit\n    interface_args: ['1', 'No', 'Yes']\n"
)


@pytest.fixture
def elsewhere(system: System, tmp_path: Path) -> dict[str, Path]:
    """A complete System in directories the environment does not name; the environment's
    directories exist and are empty."""
    places = {name: tmp_path / name for name in ("data", "datastore", "topology")}
    for place in places.values():
        place.mkdir()
    interfaces = places["data"] / "interfaces" / "v1"
    interfaces.mkdir(parents=True)
    (interfaces / "unit").write_bytes(SIMULATED_UNIT.read_bytes())
    (interfaces / "unit").chmod(0o755)
    (places["topology"] / "topology.yaml").write_text(TOPOLOGY)
    return places


def flags(places: dict[str, Path]) -> list[str]:
    return ["--data-dir", str(places["data"]), "--datastore", str(places["datastore"]),
            "--topology-dir", str(places["topology"])]


def test_the_directory_options_win_over_the_environment(
    system: System, elsewhere: dict[str, Path]
) -> None:
    assert system.run("show-provides").returncode == 2  # the environment's System is empty
    result = system.run(*flags(elsewhere), "show-provides")
    assert result.returncode == 0, result.stderr
    assert "a.a-1.rootfs-image.unit.version=factory" in result.stdout.splitlines()
    assert not (system.datastore / "topology.yaml").exists()


def test_the_datastore_option_holds_the_journal(
    system: System, elsewhere: dict[str, Path], tmp_path: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    payload = tmp_path / "firmware.bin"
    payload.write_bytes(b"x" * 100)
    subprocess.run(
        ["mender-artifact", "write", "module-image", "-T", "unit", "-t", "a", "-n", "unit-v2",
         "--provides", "rootfs-image.unit.version:unit-v2", "-f", str(payload), "-o",
         str(artifacts / "unit-v2.mender")],
        check=True, capture_output=True,
    )
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}]})
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        "api_version: mender/v1\nkind: manifest\nname: s-v2\nsystem_types_compatible: [s]\n"
        "component_types:\n  a: {artifact_name: unit-v2, update_strategy: {order: 1}}\n"
    )
    result = system.run(*flags(elsewhere), "install", str(manifest))
    assert result.returncode == 0, result.stderr
    assert system.version("a", "1") == "unit-v2"
    assert (elsewhere["datastore"] / "journal.sqlite").is_file()
    assert not (system.datastore / "journal.sqlite").exists()
    history = system.run(*flags(elsewhere), "history", "--json")
    assert [d["status"] for d in json.loads(history.stdout)["deployments"]] == ["succeeded"]


def test_the_topology_dir_defaults_to_the_datastore_option(
    system: System, elsewhere: dict[str, Path]
) -> None:
    (elsewhere["datastore"] / "topology.yaml").write_text(TOPOLOGY)
    result = system.run("--data-dir", str(elsewhere["data"]), "--datastore",
                        str(elsewhere["datastore"]), "show-provides")
    assert result.returncode == 0, result.stderr


def test_config_names_the_file_itself(system: System, elsewhere: dict[str, Path]) -> None:
    ignored = system.write_config({"Colour": "ignored, -c replaces this file"})
    named = elsewhere["data"] / "custom.conf"
    named.write_text(json.dumps({"InterfaceTimeoutSecond": 30}))
    result = system.run("-c", str(named), *flags(elsewhere), "validate")
    assert result.returncode == 0, result.stderr
    assert f"config: OK with 1 warning ({named})" in result.stdout
    assert f"{named}: unknown option InterfaceTimeoutSecond ignored" in result.stderr
    assert str(ignored) not in result.stderr + result.stdout

    long_form = system.run("--config", str(named), *flags(elsewhere), "validate")
    assert long_form.stdout == result.stdout


def test_config_keeps_the_datastore_fallback_file(
    system: System, elsewhere: dict[str, Path]
) -> None:
    named = elsewhere["data"] / "custom.conf"
    named.write_text(json.dumps({"LogLevel": "info"}))
    fallback = elsewhere["datastore"] / "mender-orchestrator.conf"
    fallback.write_text(json.dumps({"Colour": "red"}))
    result = system.run("-c", str(named), *flags(elsewhere), "validate")
    assert result.returncode == 0, result.stderr
    assert f"({named}, {fallback})" in result.stdout


def test_a_missing_config_file_is_refused(system: System, elsewhere: dict[str, Path]) -> None:
    missing = elsewhere["data"] / "nope.conf"
    for command in (["validate"], ["show-provides"]):
        result = system.run("-c", str(missing), *flags(elsewhere), *command)
        assert "Traceback" not in result.stderr
        assert result.returncode == 2, command
        assert f"{missing}: no such configuration file (named by -c/--config)" in result.stderr


def test_help_shows_each_option_with_its_default(system: System) -> None:
    result = system.run("--help")
    assert result.returncode == 0
    text = "".join(result.stdout.split())  # as wrapped at any width
    for expected in (
        "-c, --config FILE",
        "$MENDER_ORCHESTRATOR_CONF_DIR/mender-orchestrator.conf, else "
        "/etc/mender-orchestrator/mender-orchestrator.conf",
        "--data-dir DIR",
        "$MENDER_ORCHESTRATOR_DATA_DIR, else /usr/share/mender-orchestrator",
        "--datastore DIR",
        "$MENDER_ORCHESTRATOR_DATASTORE_DIR, else /var/lib/mender-orchestrator",
        "--topology-dir DIR",
        "$MENDER_ORCHESTRATOR_TOPOLOGY_DIR, else the datastore",
    ):
        assert "".join(expected.split()) in text, expected


def test_in_process_drivers_keep_their_records_in_the_datastore_the_flag_names(
    system: System, tmp_path: Path
) -> None:
    datastore = tmp_path / "datastore"
    datastore.mkdir()
    seat = tmp_path / "seat.bin"
    made = subprocess.run([sys.executable, "-m", "mender_orchestrator_i2c.simulator", "init",
                           str(seat)], capture_output=True, text=True, check=False)
    assert made.returncode == 0, made.stderr
    (datastore / "topology.yaml").write_text(
        "api_version: mender/v1\nkind: topology\nsystem_type: s\ncomponents:\n"
        "  - component_type: seat\n    interface: i2c\n"
        f"    interface_args: ['--bus=sim:{seat}', '--address=0x48']\n"
    )
    result = system.run("--datastore", str(datastore), "show-provides")
    assert result.returncode == 0, result.stderr
    # the i2c driver's host record: where the flag says, not where the environment does
    assert (datastore / "i2c").is_dir()
    assert not (system.datastore / "i2c").exists()
