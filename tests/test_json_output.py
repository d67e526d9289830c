"""``--json``: every query command's document validates against its published JSON Schema,
holds what the text output shows, and errors still go to stderr with the documented exit code.
The input schemas (Topology, Manifest, config) accept every example in the repository and
refuse what the loaders refuse."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from systems import REPO, SIMULATED_UNIT, System

from orchestrator_core.config import load_config
from orchestrator_core.errors import ValidationErrors
from orchestrator_core.manifest import load_manifest
from orchestrator_core.topology import load_topology

SCHEMAS = REPO / "orchestrator_core" / "schemas"
TOPOLOGY = (
    "api_version: mender/v1\nkind: topology\nsystem_type: s\ncomponents:\n"
    "  - component_type: a\n    interface: unit\n    interface_args: ['1', 'No', 'Yes']\n"
)
MANIFEST = (
    "api_version: mender/v1\nkind: manifest\nname: s-v2\nsystem_types_compatible: [s]\n"
    "component_types:\n  a: {artifact_name: unit-v2, update_strategy: {order: 7}}\n"
)


def check(name: str, doc: Any) -> None:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(doc)


def errors(name: str, doc: Any) -> list[str]:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("json-artifacts")
    payload = directory / "firmware.bin"
    payload.write_bytes(bytes(range(256)) * 16)
    subprocess.run(
        ["mender-artifact", "write", "module-image", "-T", "unit", "-t", "a", "-n", "unit-v2",
         "--provides", "rootfs-image.unit.version:unit-v2", "-f", str(payload), "-o",
         str(directory / "unit-v2.mender")],
        check=True, capture_output=True,
    )
    payload.unlink()
    return directory


@pytest.fixture
def unit(system: System, artifacts: Path, tmp_path: Path) -> tuple[System, Path]:
    system.add_interface("unit", SIMULATED_UNIT)
    system.write_topology(TOPOLOGY)
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}]})
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST)
    return system, manifest


def run_json(system: System, *args: str, code: int = 0) -> dict[str, Any]:
    result = system.run(*args)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)  # one document, nothing else on stdout
    return doc


# ----------------------------------------------------------------------------- outputs


def test_status_and_history_before_any_deployment(unit: tuple[System, Path]) -> None:
    system, _ = unit
    status = run_json(system, "status", "--json")
    check("status", status)
    assert status == {"format": "mender-orchestrator/status", "schema_version": 1,
                      "deployment": None}
    history = run_json(system, "history", "--json")
    check("history", history)
    assert history["deployments"] == []


def test_plan_install_status_history(unit: tuple[System, Path]) -> None:
    system, manifest = unit
    plan = run_json(system, "plan", "--json", str(manifest))
    check("plan", plan)
    assert plan["manifest_name"] == "s-v2"
    assert [g["order"] for g in plan["order_groups"]] == [7]
    [planned] = plan["order_groups"][0]["components"]
    assert (planned["key"], planned["current_version"], planned["artifact_name"]) == (
        "a/a-1", "factory", "unit-v2")
    assert plan["left_untouched"] == []

    assert system.run("install", str(manifest)).returncode == 0
    status = run_json(system, "status", "--json")
    check("status", status)
    deployment = status["deployment"]
    assert (deployment["id"], deployment["manifest_name"], deployment["status"]) == (
        1, "s-v2", "succeeded")
    assert deployment["finished"] is not None and deployment["running"] == []
    states = [s["step"] for s in deployment["steps"] if s["step_kind"] == "state"]
    assert states[:2] == ["Download", "ArtifactInstall"] and "ArtifactCommit" in states
    assert all(s["ok"] and s["component"] == "a/a-1" for s in deployment["steps"])

    history = run_json(system, "history", "--json")
    check("history", history)
    assert [(d["id"], d["status"]) for d in history["deployments"]] == [(1, "succeeded")]

    again = run_json(system, "plan", "--json", str(manifest))
    check("plan", again)
    assert again["order_groups"] == []
    assert again["left_untouched"] == [{"key": "a/a-1", "reason": "already runs unit-v2"}]


def test_show_provides_and_show_inventory(unit: tuple[System, Path]) -> None:
    system, _ = unit
    provides = run_json(system, "show-provides", "--json")
    check("show-provides", provides)
    [component] = provides["components"]
    assert (component["component_type"], component["id"], component["interface"]) == (
        "a", "a-1", "unit")
    assert component["provides"]["rootfs-image.unit.version"] == "factory"
    assert provides["failures"] == []

    inventory = run_json(system, "show-inventory", "--json")
    check("show-inventory", inventory)
    assert inventory["system_type"] == "s" and inventory["manifest_name"] is None
    assert inventory["components"][0]["provides"] == component["provides"]


def test_a_component_that_fails_is_listed_and_the_exit_status_is_1(
    unit: tuple[System, Path]
) -> None:
    system, _ = unit
    system.write_interface("unit", "#!/bin/sh\necho 'no such bus' >&2\nexit 3\n")
    result = system.run("show-provides", "--json")
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    check("show-provides", doc)
    [failure] = doc["failures"]
    assert failure["component_type"] == "a" and failure["position"] == 0
    assert failure["message"] in result.stderr  # the person still reads it on stderr


def test_drivers(unit: tuple[System, Path]) -> None:
    system, _ = unit
    doc = run_json(system, "drivers", "--json")
    check("drivers", doc)
    [component] = doc["components"]
    assert (component["kind"], component["target"], component["problem"]) == (
        "executable", str(system.interfaces / "unit"), None)
    assert doc["executables"] == ["unit"]
    assert {"name": "exec", "target": "orchestrator_core.exec_driver:from_topology"} in doc[
        "drivers"]

    (system.interfaces / "unit").unlink()
    result = system.run("drivers", "--json")
    assert result.returncode == 2
    doc = json.loads(result.stdout)
    check("drivers", doc)
    assert doc["components"][0]["kind"] is None
    assert "Interface 'unit' not found" in doc["problems"][0]
    assert "Interface 'unit' not found" in result.stderr


def test_validate(unit: tuple[System, Path], tmp_path: Path) -> None:
    system, manifest = unit
    conf = system.write_config({"InterfaceTimeoutSecond": 30})
    doc = run_json(system, "validate", "--json", str(manifest))
    check("validate", doc)
    assert doc["ok"] is True and doc["problems"] == []
    assert doc["warnings"] == [f"{conf}: unknown option InterfaceTimeoutSecond ignored"]
    assert doc["checked"][0] == f"config: OK with 1 warning ({conf})"

    bad = tmp_path / "bad.yaml"
    bad.write_text(MANIFEST.replace("order: 7", "order: 0").replace("kind: manifest", "kind: x"))
    result = system.run("validate", "--json", str(bad))
    assert result.returncode == 2
    doc = json.loads(result.stdout)
    check("validate", doc)
    assert doc["ok"] is False and len(doc["problems"]) == 2
    for problem in doc["problems"]:
        assert problem in result.stderr


def test_artifact_inspect(unit: tuple[System, Path], artifacts: Path) -> None:
    system, _ = unit
    doc = run_json(system, "artifact", "inspect", "--json", str(artifacts / "unit-v2.mender"))
    check("artifact-inspect", doc)
    assert (doc["name"], doc["compatible_devices"], doc["signature"]) == (
        "unit-v2", ["a"], "no signature")
    payload = doc["payload"]
    assert payload["type"] == "unit"
    assert payload["provides"]["rootfs-image.unit.version"] == "unit-v2"
    assert [(f["name"], f["size"]) for f in payload["files"]] == [("firmware.bin", 4096)]

    broken = system.root / "broken.mender"
    broken.write_bytes(b"not an artifact")
    result = system.run("artifact", "inspect", "--json", str(broken))
    assert result.returncode != 0 and result.stdout == ""
    assert "broken.mender" in result.stderr


def test_an_error_before_any_result_is_stderr_only(unit: tuple[System, Path]) -> None:
    system, manifest = unit
    manifest.write_text(MANIFEST.replace("order: 7", "order: 101"))
    result = system.run("plan", "--json", str(manifest))
    assert (result.returncode, result.stdout) == (2, "")
    assert "update_strategy.order: expected a whole number from 1 to 100" in result.stderr


# ------------------------------------------------------------------------------ inputs


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


EXAMPLES = sorted(p for p in (REPO / "examples").rglob("*.yaml"))
CONFIG_EXAMPLES = sorted((REPO / "examples").rglob("*.conf"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_example_is_accepted(path: Path) -> None:
    data = _yaml(path)
    check("topology" if data.get("kind") == "topology" else "manifest", data)


@pytest.mark.parametrize("path", CONFIG_EXAMPLES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_example_config_is_accepted_by_the_schema_and_the_loader(
    path: Path, tmp_path: Path
) -> None:
    check("config", json.loads(path.read_text()))
    config = load_config({"MENDER_ORCHESTRATOR_DATASTORE_DIR": str(tmp_path)}, path)
    assert config.warnings == ()


def test_the_examples_are_found() -> None:
    kinds = sorted(_yaml(p)["kind"] for p in EXAMPLES)
    assert kinds.count("topology") == 2 and kinds.count("manifest") >= 5
    assert CONFIG_EXAMPLES


GOOD_TOPOLOGY = yaml.safe_load(TOPOLOGY)
BAD_TOPOLOGIES = {
    "wrong api_version": {"api_version": "mender/v2"},
    "wrong kind": {"kind": "manifest"},
    "no system_type": {"system_type": None},
    "blank system_type": {"system_type": "  "},
    "unknown top-level field": {"colour": "red"},
    "empty components": {"components": []},
    "component_type with /": {"components": [{"component_type": "a/b"}]},
    "component_type ..": {"components": [{"component_type": ".."}]},
    "numeric interface_args": {"components": [{"component_type": "a", "interface_args": [1]}]},
    "interface with /": {"components": [{"component_type": "a", "interface": "x/y"}]},
    "unknown component field": {"components": [{"component_type": "a", "interfce": "x"}]},
    "component not a mapping": {"components": ["a"]},
}


@pytest.mark.parametrize("change", BAD_TOPOLOGIES.values(), ids=BAD_TOPOLOGIES.keys())
def test_the_topology_schema_refuses_what_the_loader_refuses(
    change: dict[str, Any], tmp_path: Path
) -> None:
    data = {k: v for k, v in {**GOOD_TOPOLOGY, **change}.items() if v is not None}
    assert errors("topology", data)
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValidationErrors):
        load_topology(path, None)


def test_the_split_components_file_schema(tmp_path: Path) -> None:
    check("topology-components", {"components": GOOD_TOPOLOGY["components"]})
    assert errors("topology-components", {"components": [], "system_type": "s"})
    split = {k: v for k, v in GOOD_TOPOLOGY.items() if k != "components"}
    check("topology", split)


GOOD_MANIFEST = yaml.safe_load(MANIFEST)
ENTRY = {"artifact_name": "unit-v2", "update_strategy": {"order": 7}}
BAD_MANIFESTS = {
    "wrong kind": {"kind": "topology"},
    "no name": {"name": None},
    "empty system_types_compatible": {"system_types_compatible": []},
    "system_types_compatible not strings": {"system_types_compatible": [1]},
    "no component_types": {"component_types": {}},
    "order 0": {"component_types": {"a": {**ENTRY, "update_strategy": {"order": 0}}}},
    "order 101": {"component_types": {"a": {**ENTRY, "update_strategy": {"order": 101}}}},
    "order true": {"component_types": {"a": {**ENTRY, "update_strategy": {"order": True}}}},
    "order a string": {"component_types": {"a": {**ENTRY, "update_strategy": {"order": "1"}}}},
    "no update_strategy": {"component_types": {"a": {"artifact_name": "x"}}},
    "no artifact": {"component_types": {"a": {"update_strategy": {"order": 1}}}},
    "unknown entry field": {"component_types": {"a": {**ENTRY, "artifact": "x"}}},
    "unknown strategy field": {
        "component_types": {"a": {**ENTRY, "update_strategy": {"order": 1, "parallel": 2}}}},
    "unknown top-level field": {"description": "x"},
}


@pytest.mark.parametrize("change", BAD_MANIFESTS.values(), ids=BAD_MANIFESTS.keys())
def test_the_manifest_schema_refuses_what_the_loader_refuses(
    change: dict[str, Any], tmp_path: Path
) -> None:
    data = {k: v for k, v in {**GOOD_MANIFEST, **change}.items() if v is not None}
    assert errors("manifest", data)
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValidationErrors):
        load_manifest(path)


GOOD_CONFIGS = [
    {},
    {"ArtifactVerifyKey": "key.pem", "LogLevel": "DEBUG", "InterfaceTimeoutSeconds": 30},
    {"ArtifactVerifyKeys": ["a.pem", "b.pem"], "RebootCommand": ["systemctl", "reboot"]},
    {"ArtifactSources": [{"Type": "directory", "Path": "/srv"},
                         {"Type": "url", "Template": "https://h:8443/{artifact_name}.mender"}],
     "ArtifactsCache": {"Enabled": True, "Path": "/tmp", "MaxSizeBytes": 0},
     "HttpTimeouts": {"ConnectSeconds": 5, "StallSeconds": 30, "MinBytesPerSecond": 0},
     "RollbackRebootRetries": 0, "RebootWaitSeconds": 60, "TopologyComponents": "c.yaml",
     "ManifestStore": "manifests"},
]
BAD_CONFIGS = {
    "both key options": {"ArtifactVerifyKey": "a.pem", "ArtifactVerifyKeys": ["b.pem"]},
    "empty key list": {"ArtifactVerifyKeys": []},
    "timeout 0": {"InterfaceTimeoutSeconds": 0},
    "timeout beyond a week": {"InterfaceTimeoutSeconds": 604801},
    "timeout true": {"InterfaceTimeoutSeconds": True},
    "log level": {"LogLevel": "verbose"},
    "negative retries": {"RollbackRebootRetries": -1},
    "reboot command a string": {"RebootCommand": "reboot"},
    "cache not an object": {"ArtifactsCache": True},
    "cache size negative": {"ArtifactsCache": {"MaxSizeBytes": -1}},
    "source without Type": {"ArtifactSources": [{"Path": "/srv"}]},
    "url without placeholder": {"ArtifactSources": [{"Type": "url", "Template": "https://h/a"}]},
    "url not http": {"ArtifactSources": [{"Type": "url", "Template": "ftp://h/{artifact_name}"}]},
    "https client without key": {"HttpsClient": {"Certificate": "c.pem"}},
    "stall seconds 0": {"HttpTimeouts": {"StallSeconds": 0}},
}


@pytest.mark.parametrize("options", GOOD_CONFIGS)
def test_the_config_schema_accepts_what_the_loader_accepts(
    options: dict[str, Any], tmp_path: Path
) -> None:
    check("config", options)
    path = tmp_path / "mender-orchestrator.conf"
    path.write_text(json.dumps(options))
    (tmp_path / "tmp").mkdir()
    load_config({"MENDER_ORCHESTRATOR_DATASTORE_DIR": str(tmp_path / "ds")}, path)


@pytest.mark.parametrize("options", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_the_config_schema_refuses_what_the_loader_refuses(
    options: dict[str, Any], tmp_path: Path
) -> None:
    assert errors("config", options)
    path = tmp_path / "mender-orchestrator.conf"
    path.write_text(json.dumps(options))
    with pytest.raises(ValidationErrors):
        load_config({"MENDER_ORCHESTRATOR_DATASTORE_DIR": str(tmp_path / "ds")}, path)


def test_the_config_schema_refuses_a_misspelt_option_the_loader_warns_of() -> None:
    assert errors("config", {"InterfaceTimeoutSecond": 30})


def test_status_of_a_stopped_deployment_shows_where_it_stopped(unit: tuple[System, Path]) -> None:
    system, manifest = unit
    result = system.run("install", "--stop-before", "ArtifactCommit", str(manifest))
    assert result.returncode == 0, result.stderr
    status = run_json(system, "status", "--json")
    check("status", status)
    deployment = status["deployment"]
    assert deployment["finished"] is None
    [stopped] = [e for e in deployment["events"] if e["kind"] == "stopped"]
    assert stopped["value"] == "ArtifactCommit"
    assert "ArtifactCommit" not in [s["step"] for s in deployment["steps"]]
    assert [c["key"] for c in deployment["components"]] == ["a/a-1"]
