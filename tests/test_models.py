"""Topology, Manifest and config parsing: every field's rules and the messages they give."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator_core.config import load_config
from orchestrator_core.errors import ConfigError, ValidationErrors
from orchestrator_core.manifest import check_against_topology, load_manifest
from orchestrator_core.topology import load_topology

TOPOLOGY = """\
api_version: mender/v1
kind: topology
system_type: ev-2026
components:
  - component_type: tcu
    interface: cellular-ota
    interface_args: ["tcu1", "15:22:aa:33:ff"]
  - component_type: seat_heating
"""

MANIFEST = """\
api_version: "mender/v1"
kind: "manifest"
name: "ev-v3"
system_types_compatible: ["ev-2026", "ev-2025"]
component_types:
  tcu:
    artifact_name: tcu-v2
    update_strategy: {order: 30}
  seat_heating:
    artifact_path: /artifacts/seat.mender
    artifact_name: seat-v1
    update_strategy: {order: 20}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    return str(exc.value)


def test_topology_parses_defaults_and_args(tmp_path: Path) -> None:
    topology = load_topology(write(tmp_path, "topology.yaml", TOPOLOGY), None)
    assert topology.system_type == "ev-2026"
    tcu, seat = topology.components
    assert (tcu.interface, tcu.interface_args, tcu.position) == (
        "cellular-ota", ("tcu1", "15:22:aa:33:ff"), 0)
    assert (seat.interface, seat.interface_args) == ("seat_heating", ())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\nb: c: d\n", "invalid YAML at line 2 column 5"),
        ("- just\n- a list\n", "expected a YAML mapping at the top level, found a list"),
        ("", "found an empty file"),
        (TOPOLOGY.replace("kind: topology", "kind: manifest"), "field kind must be 'topology'"),
        (TOPOLOGY.replace("mender/v1", "mender/v2"), "field api_version must be 'mender/v1'"),
        (TOPOLOGY.replace("system_type: ev-2026", "system_type: 2026"), "field system_type"),
        (TOPOLOGY.replace('["tcu1", "15:22:aa:33:ff"]', "[1, 2]"),
         "components[0].interface_args: expected a list of strings"),
        (TOPOLOGY.replace("  - component_type: seat_heating", "  - interface: x"),
         "components[1].component_type: expected a non-empty string"),
        (TOPOLOGY + "    colour: red\n", "components[1]: unknown field 'colour'"),
        (TOPOLOGY.replace("component_type: seat_heating", "component_type: ../seat"),
         "components[1].component_type: '../seat' must not be '.' or '..' nor contain '/'"),
        (TOPOLOGY.replace("component_type: seat_heating", "component_type: '..'"),
         "components[1].component_type: '..' must not be"),
        (TOPOLOGY.replace("component_type: seat_heating", "component_type: 'seat=1'"),
         "components[1].component_type: 'seat=1' must not be"),
        (TOPOLOGY.replace("kind: topology", "kind: topology\nkind: topology"),
         "duplicate key 'kind'"),
    ],
)
def test_topology_errors_name_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "topology.yaml", text)
    with pytest.raises(ConfigError) as exc:
        load_topology(path, None)
    assert expected in str(exc.value)
    assert str(path) in str(exc.value)


def test_topology_lists_every_problem_at_once(tmp_path: Path) -> None:
    text = "api_version: x\nkind: y\ncomponents: []\n"
    with pytest.raises(ValidationErrors) as exc:
        load_topology(write(tmp_path, "t.yaml", text), None)
    assert len(exc.value.problems) == 4


def test_split_components_exactly_one_place(tmp_path: Path) -> None:
    head = "api_version: mender/v1\nkind: topology\nsystem_type: s\n"
    main = write(tmp_path, "topology.yaml", head)
    split = write(tmp_path, "components.yaml", "components:\n  - component_type: rtos\n")
    topology = load_topology(main, split)
    assert [c.component_type for c in topology.components] == ["rtos"]
    assert topology.components_path == split
    with pytest.raises(ConfigError, match="no components list, and no split components file"):
        load_topology(main, None)
    both = write(tmp_path, "both.yaml", head + "components:\n  - component_type: x\n")
    with pytest.raises(ConfigError, match="must be in exactly one place"):
        load_topology(both, split)
    with pytest.raises(ConfigError, match="does not exist"):
        load_topology(main, tmp_path / "missing.yaml")


def test_manifest_parses_and_matches_topology(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, "m.yaml", MANIFEST))
    assert manifest.name == "ev-v3"
    seat = manifest.component_types["seat_heating"]
    assert (seat.artifact_path, seat.artifact_name, seat.order) == (
        "/artifacts/seat.mender", "seat-v1", 20)
    topology = load_topology(write(tmp_path, "topology.yaml", TOPOLOGY), None)
    assert check_against_topology(manifest, topology) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("order: 30", "order: 0"), "order: expected a whole number from 1 to 100, got 0"),
        (("order: 30", "order: 101"), "got 101"),
        (("order: 30", "order: '5'"), "got '5'"),
        (("order: 30", "order: true"), "got True"),
        (("    artifact_name: tcu-v2\n", ""), "tcu: needs artifact_name or artifact_path"),
        (('["ev-2026", "ev-2025"]', "ev-2026"), "system_types_compatible: expected a non-empty list"),
        (('name: "ev-v3"', "name: 3"), "field name: expected a non-empty string, got a number"),
        (("artifact_name: tcu-v2", "artifact_name: [a]"), "tcu.artifact_name: expected a non-empty"),
    ],
)
def test_manifest_errors(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    path = write(tmp_path, "m.yaml", MANIFEST.replace(*change))
    with pytest.raises(ConfigError) as exc:
        load_manifest(path)
    assert expected in str(exc.value)


def test_manifest_incompatible_system_and_missing_type(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, "m.yaml", MANIFEST.replace('"ev-2026", ', "")))
    topology = load_topology(
        write(tmp_path, "topology.yaml", TOPOLOGY + "  - component_type: brakes\n"), None
    )
    problems = check_against_topology(manifest, topology)
    assert len(problems) == 2
    assert "does not contain the Topology's system_type 'ev-2026'" in problems[0]
    assert "no entry for 'brakes'" in problems[1]


def dirs(tmp_path: Path) -> dict[str, str]:
    env = {
        "MENDER_ORCHESTRATOR_CONF_DIR": str(tmp_path / "etc"),
        "MENDER_ORCHESTRATOR_DATA_DIR": str(tmp_path / "share"),
        "MENDER_ORCHESTRATOR_DATASTORE_DIR": str(tmp_path / "lib"),
    }
    (tmp_path / "etc").mkdir()
    (tmp_path / "lib").mkdir()
    return env


def test_config_defaults(tmp_path: Path) -> None:
    config = load_config(dirs(tmp_path))
    assert config.interface_timeout_seconds == 14400
    assert config.log_level == "info"
    assert config.artifacts_cache.enabled is False
    assert config.artifacts_cache.path == tmp_path / "lib" / "artifacts"
    assert config.artifacts_cache.max_size_bytes == 0
    assert config.manifest_store == tmp_path / "lib" / "manifests"
    assert config.topology_file == tmp_path / "lib" / "topology.yaml"
    assert config.artifact_verify_keys == ()
    assert config.reboot_command == ("reboot",)
    assert config.rollback_reboot_retries == 3


def test_config_main_wins_over_fallback_and_env_wins(tmp_path: Path) -> None:
    env = dirs(tmp_path)
    (tmp_path / "etc" / "mender-orchestrator.conf").write_text(json.dumps(
        {"LogLevel": "debug", "ArtifactVerifyKeys": ["k1.pem", "/abs/k2.pem"],
         "TopologyComponents": "/etc/components.yaml"}))
    (tmp_path / "lib" / "mender-orchestrator.conf").write_text(json.dumps(
        {"LogLevel": "error", "InterfaceTimeoutSeconds": 5, "ArtifactVerifyKey": "other.pem",
         "ArtifactsCache": {"Enabled": True, "MaxSizeBytes": 1000}}))
    config = load_config(env)
    assert config.log_level == "debug"
    assert config.interface_timeout_seconds == 5
    assert config.artifact_verify_keys == (tmp_path / "etc" / "k1.pem", Path("/abs/k2.pem"))
    assert config.artifacts_cache.enabled and config.artifacts_cache.max_size_bytes == 1000
    assert config.topology_components == Path("/etc/components.yaml")
    env.update(MENDER_ORCHESTRATOR_TOPOLOGY_COMPONENTS_FILE="/env/components.yaml",
               MENDER_ORCHESTRATOR_MANIFEST_STORE_DIR="/env/manifests",
               MENDER_ORCHESTRATOR_ARTIFACTS_CACHE_DIR="/env/cache",
               MENDER_ORCHESTRATOR_TOPOLOGY_DIR="/env/topology")
    config = load_config(env)
    assert config.topology_components == Path("/env/components.yaml")
    assert config.manifest_store == Path("/env/manifests")
    assert config.artifacts_cache.path == Path("/env/cache")
    assert config.topology_file == Path("/env/topology/topology.yaml")


def test_config_errors_are_all_listed_with_file_and_key(tmp_path: Path) -> None:
    env = dirs(tmp_path)
    path = tmp_path / "etc" / "mender-orchestrator.conf"
    path.write_text(json.dumps({
        "LogLevel": "loud", "InterfaceTimeoutSeconds": -1, "ArtifactVerifyKey": "a",
        "ArtifactVerifyKeys": ["b"], "ArtifactsCache": {"Enabled": "yes"}, "Colour": "red",
        "HttpsClient": {"Certificate": "c.pem"},
    }))
    with pytest.raises(ValidationErrors) as exc:
        load_config(env)
    text = str(exc.value)
    assert f"{path}: option LogLevel: expected one of trace, debug" in text
    assert ("option InterfaceTimeoutSeconds: expected a number of seconds > 0 and at most "
            "604800 (7 days), got -1") in text
    assert "ArtifactVerifyKey and ArtifactVerifyKeys are both set" in text
    assert "option ArtifactsCache: expected true or false" in text
    assert "option HttpsClient: expected both Certificate and Key" in text
    assert len(exc.value.problems) == 5


def test_config_unknown_key_is_a_warning_and_bad_json_an_error(tmp_path: Path) -> None:
    env = dirs(tmp_path)
    path = tmp_path / "etc" / "mender-orchestrator.conf"
    path.write_text('{"Colour": "red"}')
    assert load_config(env).warnings == (f"{path}: unknown option Colour ignored",)
    path.write_text('{"LogLevel": "info",}')
    with pytest.raises(ValidationErrors, match="invalid JSON at line 1"):
        load_config(env)
    path.write_text('{"LogLevel": "info", "LogLevel": "debug"}')
    with pytest.raises(ValidationErrors, match="LogLevel given more than once"):
        load_config(env)


def test_deeply_nested_yaml_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line 1 column 1001: exceeded maximum nesting depth"):
        load_manifest(write(tmp_path, "m.yaml", "[" * 100000))


def test_the_nesting_limit_is_ours_not_the_parsers(monkeypatch: pytest.MonkeyPatch) -> None:
    # PyYAML's Python parser, like the libyaml of PyYAML before 6.0.4 (Debian 12's 6.0), has
    # no limit of its own: the 1000 levels are checked in the event stream, before any parser
    # builds anything
    import yaml

    from orchestrator_core import yaml_loader

    monkeypatch.setattr(yaml_loader, "_SafeLoader", yaml.SafeLoader)
    deepest = "[" * 999 + "]" * 999  # and the mapping around it: 1000 levels
    yaml_loader._refuse_anchors(f"a: {deepest}\n")
    with pytest.raises(yaml.MarkedYAMLError, match="exceeded maximum nesting depth") as raised:
        yaml_loader._refuse_anchors(f"a: [{deepest}]\n")
    assert raised.value.problem_mark is not None
    assert raised.value.problem_mark.column == 1002


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("ftp://host/{artifact_name}", "must be an http:// or https:// URL with a host"),
        ("https:///{artifact_name}", "must be an http:// or https:// URL with a host"),
        ("https://host:99999/{artifact_name}", "has an invalid port"),
        ("https://host/fixed.mender", "must contain {artifact_name}"),
    ],
)
def test_artifact_source_templates_are_checked(tmp_path: Path, template: str, expected: str
                                               ) -> None:
    env = dirs(tmp_path)
    (tmp_path / "etc" / "mender-orchestrator.conf").write_text(
        json.dumps({"ArtifactSources": [{"Type": "url", "Template": template}]}))
    with pytest.raises(ValidationErrors) as exc:
        load_config(env)
    assert "option ArtifactSources: [0].Template" in str(exc.value)
    assert expected in str(exc.value)


def alias_bomb(levels: int = 6) -> str:
    """A Manifest of a few hundred bytes whose aliases stand for 10**levels strings."""
    lines = ['api_version: mender/v1', 'kind: manifest', 'name: x', 'a0: &a0 ["lol"]']
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 10)}]")
    lines.append(f"system_types_compatible: *a{levels}")
    return "\n".join(lines) + "\n"


def test_yaml_aliases_are_refused_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", alias_bomb())
    assert path.stat().st_size < 1000
    with pytest.raises(ConfigError) as exc:
        load_manifest(path)
    assert str(exc.value) == (
        f"Manifest {path}: invalid YAML at line 4 column 5: anchors (&a0) are not allowed"
    )
    topology = write(tmp_path, "t.yaml", TOPOLOGY + "  - *first\n")
    with pytest.raises(ConfigError, match=r"t.yaml: invalid YAML at line 9 column 5: "
                                          r"aliases \(\*first\) are not allowed"):
        load_topology(topology, None)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("  ? [a, b]\n  : x\n", "line 6 column 5: a key must be a plain value, not a list"),
        ("  {a: 1}: x\n", "line 6 column 3: a key must be a plain value, not a mapping"),
    ],
)
def test_yaml_complex_keys_are_a_message(tmp_path: Path, entry: str, expected: str) -> None:
    text = MANIFEST.split("component_types:\n")[0] + "component_types:\n" + entry
    with pytest.raises(ConfigError) as exc:
        load_manifest(write(tmp_path, "m.yaml", text))
    assert expected in str(exc.value)


def test_an_order_of_thousands_of_digits_is_a_message(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", MANIFEST.replace("order: 30", "order: " + "9" * 4400))
    with pytest.raises(ConfigError) as exc:
        load_manifest(path)
    assert str(exc.value) == (
        f"Manifest {path}: invalid YAML at line 8 column 30: a number of 4400 characters is "
        f"too long"
    )
    # just under Python's conversion limit: refused by the bound, shown as an excerpt
    path = write(tmp_path, "m.yaml", MANIFEST.replace("order: 30", "order: " + "9" * 4000))
    with pytest.raises(ConfigError) as exc:
        load_manifest(path)
    assert "order: expected a whole number from 1 to 100, got 999999" in str(exc.value)
    assert len(str(exc.value)) < 300


def test_values_in_messages_are_excerpts(tmp_path: Path) -> None:
    long_kind = "k" * 100_000
    path = write(tmp_path, "m.yaml", MANIFEST.replace('kind: "manifest"', f"kind: {long_kind}"))
    with pytest.raises(ConfigError) as exc:
        load_manifest(path)
    assert f"field kind must be 'manifest', got '{'k' * 30}" in str(exc.value)
    assert len(str(exc.value)) < 300


def test_http_timeouts_default_and_checked(tmp_path: Path) -> None:
    env = dirs(tmp_path)
    path = tmp_path / "etc" / "mender-orchestrator.conf"
    path.write_text("{}")
    limits = load_config(env).http_limits
    assert (limits.connect_seconds, limits.stall_seconds, limits.min_bytes_per_second) == (
        15.0, 60.0, 1024)
    path.write_text(json.dumps({"HttpTimeouts": {"StallSeconds": 5, "MinBytesPerSecond": 0}}))
    limits = load_config(env).http_limits
    assert (limits.connect_seconds, limits.stall_seconds, limits.min_bytes_per_second) == (
        15.0, 5.0, 0)
    for value, expected in [
        ({"StallSeconds": 0}, "StallSeconds: expected a number of seconds > 0 and <= 3600, got 0"),
        ({"ConnectSeconds": 1e9}, "ConnectSeconds: expected a number of seconds > 0 and <= 3600"),
        ({"MinBytesPerSecond": -1}, "MinBytesPerSecond: expected a whole number >= 0, got -1"),
        (30, "expected an object with ConnectSeconds, StallSeconds, MinBytesPerSecond, got 30"),
    ]:
        path.write_text(json.dumps({"HttpTimeouts": value}))
        with pytest.raises(ValidationErrors) as exc:
            load_config(env)
        assert str(exc.value).startswith(f"{path}: option HttpTimeouts: {expected}")
