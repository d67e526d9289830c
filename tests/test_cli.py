"""The command line on bad input of every kind: one clear message, a non-zero exit, no
traceback, nothing on disk changed. Interfaces are real executables (tests/interfaces)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from systems import REPO, System

RECORDER = REPO / "tests" / "interfaces" / "recorder"
TOPOLOGY = """\
api_version: mender/v1
kind: topology
system_type: car
components:
  - component_type: tcu
    interface: cellular
    interface_args: ["tcu1"]
  - component_type: brakes
    interface: can-bridge
    interface_args: ["front"]
  - component_type: brakes
    interface: can-bridge
    interface_args: ["rear"]
"""
MANIFEST = """\
api_version: mender/v1
kind: manifest
name: car-v2
system_types_compatible: [car]
component_types:
  tcu: {artifact_name: tcu-v2, update_strategy: {order: 1}}
  brakes: {artifact_name: brakes-v2, update_strategy: {order: 2}}
"""


@pytest.fixture
def car(system: System) -> System:
    system.add_interface("cellular", RECORDER)
    system.add_interface("can-bridge", RECORDER)
    system.write_topology(TOPOLOGY)
    return system


def run(system: System, *args: str) -> tuple[int, str, str]:
    result = system.run(*args, env={"TEST_INTERFACE_DIR": str(system.root)})
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout, result.stderr


def behave(system: System, key: str, state: str, snippet: str) -> None:
    directory = system.root / "behaviour" / key
    directory.mkdir(parents=True, exist_ok=True)
    (directory / state).write_text(snippet)


def snapshot(system: System) -> dict[str, bytes]:
    return {str(p.relative_to(system.root)): p.read_bytes()
            for p in sorted(system.datastore.rglob("*")) if p.is_file()}


def test_show_provides_prints_every_component_sorted(car: System) -> None:
    code, out, err = run(car, "show-provides")
    assert code == 0, err
    assert out.splitlines() == [
        "brakes.front.device_type=brakes",
        "brakes.front.rootfs-image.can-bridge.version=v1",
        "brakes.rear.device_type=brakes",
        "brakes.rear.rootfs-image.can-bridge.version=v1",
        "tcu.tcu1.device_type=tcu",
        "tcu.tcu1.rootfs-image.cellular.version=v1",
    ]
    calls = [line.split("\t")[:2] for line in (car.root / "calls.log").read_text().splitlines()]
    for key in ("tcu1", "front", "rear"):
        assert [state for k, state in calls if k == key] == ["Identity", "Provides"]


@pytest.mark.parametrize(
    ("state", "snippet", "expected"),
    [
        ("Provides", "echo 'no equals sign'", "no equals sign"),
        ("Provides", "echo broken >&2; exit 3", "exit"),
        ("Provides", "echo device_type=brakes", "did not report rootfs-image.can-bridge.version"),
        ("Identity", "echo 'id=a'; echo 'id=b'", "Identity"),
        ("Identity", "echo 'id=../../etc'", "must not be"),
    ],
)
def test_a_broken_component_is_named_while_the_others_still_print(
    car: System, state: str, snippet: str, expected: str
) -> None:
    behave(car, "rear", state, snippet)
    code, out, err = run(car, "show-provides")
    assert code == 1
    assert "brakes.front.rootfs-image.can-bridge.version=v1" in out
    assert "tcu.tcu1.device_type=tcu" in out
    assert "brakes.rear" not in out
    # named by its ID once Identity answered, else by its place in the Topology
    assert "brakes/rear (interface can-bridge)" in err or "brakes[2]" in err
    assert expected in err


def test_a_hanging_interface_is_killed_at_the_timeout(car: System) -> None:
    car.write_config({"InterfaceTimeoutSeconds": 1})
    behave(car, "front", "Provides", "sleep 60")
    code, out, err = run(car, "show-provides")
    assert code == 1
    assert "tcu.tcu1.rootfs-image.cellular.version=v1" in out
    assert ("brakes/front (interface can-bridge): Provides ran longer than "
            "InterfaceTimeoutSeconds (1 s) and was killed with its whole process group") in err


def test_duplicate_component_ids_are_refused(car: System) -> None:
    behave(car, "rear", "Identity", "echo id=front")
    code, _out, err = run(car, "show-provides")
    assert code == 1
    assert "id=front is also the id of brakes[1]" in err


def test_missing_interface_lists_what_exists(car: System) -> None:
    (car.interfaces / "cellular").unlink()
    code, _, err = run(car, "show-provides")
    assert code == 1
    assert "Interface 'cellular' not found" in err
    assert "Executables available: can-bridge" in err
    assert "drivers available:" in err and "exec" in err
    code, out, err = run(car, "drivers")
    assert code == 2
    assert "tcu: interface cellular -> NOT FOUND" in out
    assert "brakes: interface can-bridge -> executable" in out


def test_show_inventory(car: System) -> None:
    behave(car, "all", "Inventory", "echo serial=$KEY; echo feature=a; echo feature=b")
    code, out, err = run(car, "show-inventory")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:4] == ["system_type=car", "components=brakes.front", "components=brakes.rear",
                         "components=tcu.tcu1"]
    assert "brakes.rear.feature=a" in lines and "brakes.rear.feature=b" in lines
    assert "tcu.tcu1.serial=tcu1" in lines
    assert "tcu.tcu1.rootfs-image.cellular.version=v1" in lines


def test_validate_lists_every_problem_at_once(car: System, tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST.replace("[car]", "[truck]").replace(
        "  tcu: {artifact_name: tcu-v2, update_strategy: {order: 1}}\n", ""))
    car.write_config({"LogLevel": "chatty"})
    code, out, err = run(car, "validate", str(manifest))
    assert code == 2
    assert "option LogLevel: expected one of" in err
    car.write_config({})
    code, out, err = run(car, "validate", str(manifest))
    assert code == 2
    assert "topology: OK" in out
    assert "does not contain the Topology's system_type 'car'" in err
    assert "component_types has no entry for 'tcu'" in err
    manifest.write_text(MANIFEST)
    code, out, err = run(car, "validate", str(manifest))
    assert code == 0, err
    assert "manifest: OK" in out


@pytest.mark.parametrize(
    "topology",
    [
        "kind: topology\n\tbad: [",
        "api_version: mender/v1\nkind: topology\nsystem_type: car\ncomponents: {a: 1}\n",
        TOPOLOGY.replace('interface_args: ["front"]', "interface_args: front"),
        TOPOLOGY.replace("component_type: tcu", "component_type: ''"),
    ],
)
def test_bad_topology_is_one_message_and_nothing_changes(car: System, topology: str) -> None:
    car.write_topology(topology)
    before = snapshot(car)
    for command in ("show-provides", "show-inventory", "drivers", "validate"):
        code, _, err = run(car, command)
        assert code != 0
        assert str(car.datastore / "topology.yaml") in err
    assert snapshot(car) == before


def test_bad_config_json_names_the_file(car: System) -> None:
    (car.conf_dir / "mender-orchestrator.conf").write_text("{not json")
    code, _, err = run(car, "show-provides")
    assert code == 2
    assert f"{car.conf_dir / 'mender-orchestrator.conf'}: invalid JSON at line 1" in err


def test_split_components_file_priority(car: System, tmp_path: Path) -> None:
    """-t wins over the env variable, which wins over the TopologyComponents option."""
    car.write_topology("api_version: mender/v1\nkind: topology\nsystem_type: car\n")

    def components(name: str, key: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text("components:\n  - component_type: tcu\n    interface: cellular\n"
                        f"    interface_args: [{key}]\n")
        return path

    by_option = components("option", "from-option")
    by_env = components("env", "from-env")
    by_config = components("config", "from-config")
    car.write_config({"TopologyComponents": str(by_config)})
    env = {"TEST_INTERFACE_DIR": str(car.root)}

    def ids(*args: str, **extra: str) -> str:
        result = car.run(*args, "show-provides", env={**env, **extra})
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()[0].split(".")[1]

    assert ids() == "from-config"
    assert ids(MENDER_ORCHESTRATOR_TOPOLOGY_COMPONENTS_FILE=str(by_env)) == "from-env"
    assert ids("-t", str(by_option),
               MENDER_ORCHESTRATOR_TOPOLOGY_COMPONENTS_FILE=str(by_env)) == "from-option"
    assert ids("--topology-components", str(by_option)) == "from-option"


def test_log_lines_have_the_mender_shape(car: System) -> None:
    behave(car, "front", "Provides", "echo 'cable \"A\" unplugged' >&2; exit 1")
    code, _, err = run(car, "--log-level", "debug", "show-provides")
    assert code == 1
    line = next(line for line in err.splitlines() if "severity=error" in line)
    assert line.startswith("record_id=")
    assert ' time="' in line and ' name="Global" msg="' in line
    assert '\\"A\\"' in err  # quotes inside msg are escaped


def test_every_command_has_help(car: System) -> None:
    for command in ("install", "resume", "rollback", "plan", "status", "history",
                    "show-provides", "show-inventory", "validate", "drivers", "artifact",
                    "manifest-gen"):
        code, out, _ = run(car, command, "--help")
        assert code == 0 and "Usage:" in out, command


def test_nothing_to_resume(car: System) -> None:
    for command in ("resume", "rollback"):
        code, _, err = run(car, command)
        assert code == 6  # its own status, distinct from a failed deployment's
        assert "nothing to resume" in err


def test_unknown_option_and_missing_manifest(car: System, tmp_path: Path) -> None:
    code, _, err = run(car, "install", "--stop-before", "Reboot", str(tmp_path / "m.yaml"))
    assert code == 2 and "Invalid value for '--stop-before'" in err
    code, _, err = run(car, "install", str(tmp_path / "missing.yaml"))
    assert code == 2 and f"Manifest {tmp_path / 'missing.yaml'} does not exist" in err
    assert not (car.datastore / "journal.sqlite").exists()


def test_config_unknown_key_is_only_a_warning(car: System) -> None:
    car.write_config({"Colour": "red"})
    code, _, err = run(car, "show-provides")
    assert code == 0
    assert "unknown option Colour ignored" in err
    assert json.loads((car.conf_dir / "mender-orchestrator.conf").read_text()) == {"Colour": "red"}


def test_queries_wait_while_a_deployment_runs(car: System) -> None:
    """Asking Components for versions in the middle of their update could break it."""
    import fcntl

    lock = car.datastore / "lock"
    with lock.open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what a running deployment holds
        for command in ("show-provides", "show-inventory"):
            code, out, err = run(car, command)
            assert code == 5 and out == ""  # busy
            assert "a deployment is running on this System right now" in err
            assert command in err
        assert not (car.root / "calls.log").exists()  # no Interface was asked anything
    code, out, _ = run(car, "show-provides")
    assert code == 0 and "tcu.tcu1.device_type=tcu" in out


def test_queries_create_nothing_but_the_lock_on_a_fresh_device(car: System) -> None:
    before = snapshot(car)
    assert run(car, "show-provides")[0] == 0
    after = snapshot(car)
    assert after.pop(str((car.datastore / "lock").relative_to(car.root))) == b""
    assert after == before


def test_validate_checks_the_verification_keys(car: System) -> None:
    (car.conf_dir / "not-a-key.pem").write_text("hello")
    car.write_config({"ArtifactVerifyKeys": ["not-a-key.pem", "missing.pem"]})
    code, _, err = run(car, "validate")
    assert code == 2
    assert f"verification key {car.conf_dir / 'not-a-key.pem'}: not a PEM public key" in err


def test_a_driver_refusing_its_arguments_is_caught_by_validate_and_drivers(
    system: System,
) -> None:
    """`interface: exec` is an in-process driver: its first argument must be an executable."""
    system.write_topology("api_version: mender/v1\nkind: topology\nsystem_type: car\n"
                          "components:\n  - component_type: tcu\n    interface: exec\n"
                          "    interface_args: [relative/path]\n")
    code, _, err = run(system, "validate")
    assert code == 2
    assert "interface 'exec' needs the absolute path of the Interface executable" in err
    code, out, err = run(system, "drivers")
    assert code == 2
    assert "tcu: interface exec -> driver orchestrator_core.exec_driver:from_topology" in out
    assert "its interface_args ['relative/path'] are REFUSED" in out
