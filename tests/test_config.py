"""The configuration as the field writes it: options and fields this implementation does not
use are warnings on every command, bad values are refused by the loader (so by ``validate``
too), and what the files name on disk is checked before a deployment is journaled."""

from __future__ import annotations

import functools
import http.server
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from systems import SIMULATED_UNIT, System

MANIFEST = (
    "api_version: mender/v1\nkind: manifest\nname: s-v2\nsystem_types_compatible: [s]\n"
    "component_types:\n  a: {artifact_name: unit-v2, update_strategy: {order: 1}}\n"
)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("config-artifacts")
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
    """One simulated unit (rollback supported, no reboot) and a Manifest moving it to v2."""
    system.add_interface("unit", SIMULATED_UNIT)
    system.write_topology("api_version: mender/v1\nkind: topology\nsystem_type: s\n"
                          "components:\n  - component_type: a\n    interface: unit\n"
                          "    interface_args: ['1', 'No', 'Yes']\n")
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}]})
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST)
    return system, manifest


def run(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    result = system.run(*args)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def deployments(system: System) -> int:
    journal = system.datastore / "journal.sqlite"
    if not journal.exists():
        return 0
    with sqlite3.connect(journal) as db:
        return int(db.execute("SELECT count(*) FROM deployment").fetchone()[0])


# --------------------------------------------------------------------------- warnings


def test_fields_upstream_parses_are_warnings_on_every_command(
    unit: tuple[System, Path], artifacts: Path
) -> None:
    system, manifest = unit
    conf = system.write_config({
        "ArtifactSources": [{"Type": "directory", "Path": str(artifacts), "Recursive": True}],
        "HttpsClient": {"Certificate": "c.pem", "Key": "k.pem", "SSLEngine": "pkcs11"},
        "ArtifactsCache": {"Enabled": False, "Colour": "red"},
    })
    expected = [
        f"{conf}: unknown field ArtifactsCache.Colour ignored",
        f"{conf}: unknown field HttpsClient.SSLEngine ignored",
        f"{conf}: unknown field ArtifactSources[0].Recursive ignored",
    ]
    for command in (["show-provides"], ["plan", str(manifest)], ["validate", str(manifest)]):
        result = run(system, *command)
        assert result.returncode == 0, (command, result.stderr)
        for warning in expected:
            assert warning in result.stderr, (command, result.stderr)
    assert "config: OK with 3 warnings" in result.stdout
    result = run(system, "install", str(manifest))
    assert result.returncode == 0, result.stderr
    assert system.version("a", "1") == "unit-v2"


def test_validate_prints_the_warning_for_a_misspelt_option(unit: tuple[System, Path]) -> None:
    system, _ = unit
    conf = system.write_config({"InterfaceTimeoutSecond": 30})
    result = run(system, "validate")
    assert result.returncode == 0, result.stderr
    assert f"config: OK with 1 warning ({conf})" in result.stdout
    assert f"{conf}: unknown option InterfaceTimeoutSecond ignored" in result.stderr
    assert "severity=warning" in result.stderr


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_source(artifacts: Path) -> Iterator[str]:
    handler = functools.partial(_Quiet, directory=str(artifacts))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{{artifact_name}}.mender"
    finally:
        server.shutdown()
        server.server_close()


def test_a_missing_server_certificate_is_a_warning(
    unit: tuple[System, Path], http_source: str
) -> None:
    system, manifest = unit
    missing = system.conf_dir / "server.crt"
    system.write_config({"ArtifactSources": [{"Type": "url", "Template": http_source}],
                         "ServerCertificate": "server.crt"})
    warning = f"ServerCertificate {missing} does not exist; only the system's trusted CAs"
    result = run(system, "validate", str(manifest))
    assert result.returncode == 0, result.stderr
    assert warning in result.stderr
    result = run(system, "install", str(manifest))
    assert result.returncode == 0, result.stderr
    assert warning in result.stderr
    assert system.version("a", "1") == "unit-v2"


# --------------------------------------------------------------------------- refusals


def test_deeply_nested_json_is_one_message_naming_the_file(unit: tuple[System, Path]) -> None:
    system, _ = unit
    conf = system.conf_dir / "mender-orchestrator.conf"
    conf.write_text('{"LogLevel": ' + "[" * 100_000 + "]" * 100_000 + "}")
    for command in ("show-provides", "validate"):
        result = run(system, command)
        assert result.returncode == 2
        assert f"{conf}: JSON nested too deeply; expected a JSON object of options" in result.stderr


@pytest.mark.parametrize(
    "value",
    ["2160000", "Infinity", "-Infinity", "NaN", "0", "-1", "true", '"30"', "604800.5"],
)
def test_interface_timeout_is_bounded(unit: tuple[System, Path], value: str) -> None:
    system, manifest = unit
    conf = system.conf_dir / "mender-orchestrator.conf"
    conf.write_text('{"InterfaceTimeoutSeconds": ' + value + "}")
    expected = (f"{conf}: option InterfaceTimeoutSeconds: expected a number of seconds > 0 and "
                f"at most 604800 (7 days), got ")
    for command in (["validate"], ["show-provides"], ["install", str(manifest)]):
        result = run(system, *command)
        assert result.returncode == 2, (command, result.stderr)
        assert expected in result.stderr
    assert deployments(system) == 0
    assert system.calls("a", "1") == []


def test_the_longest_interface_timeout_is_accepted(unit: tuple[System, Path]) -> None:
    system, _ = unit
    system.write_config({"InterfaceTimeoutSeconds": 604800})
    result = run(system, "show-provides")
    assert result.returncode == 0, result.stderr
    assert "a.a-1.rootfs-image.unit.version=factory" in result.stdout


# --------------------------------------------------------------------------- before the journal


def test_a_missing_cache_directory_is_refused_before_anything_is_journaled(
    unit: tuple[System, Path], artifacts: Path
) -> None:
    system, manifest = unit
    cache = system.root / "no-such-cache"
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}],
                         "ArtifactsCache": {"Enabled": True, "Path": str(cache)}})
    expected = (f"ArtifactsCache.Path {cache} does not exist or is not a directory; create it, "
                f"or set ArtifactsCache.Enabled to false")
    result = run(system, "validate", str(manifest))
    assert result.returncode == 2
    assert expected in result.stderr
    for command in ("plan", "install"):
        result = run(system, command, str(manifest))
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr
    assert deployments(system) == 0
    # refused before any Interface was asked anything
    assert system.calls("a", "1") == []
    assert run(system, "resume").returncode != 0  # nothing was left to resume
    cache.mkdir()
    result = run(system, "install", str(manifest))
    assert result.returncode == 0, result.stderr
    assert system.version("a", "1") == "unit-v2"


def test_a_deployment_journaled_with_a_cache_that_went_away_still_rolls_back(
    unit: tuple[System, Path], artifacts: Path
) -> None:
    """As a deployment journaled by a version that did not check the cache would be."""
    system, manifest = unit
    cache = system.root / "cache"
    cache.mkdir()
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}],
                         "ArtifactsCache": {"Enabled": True, "Path": str(cache)}})
    result = run(system, "install", "--stop-before", "ArtifactCommit", str(manifest))
    assert result.returncode == 0, result.stderr
    assert system.version("a", "1") == "unit-v2"
    for entry in cache.iterdir():
        entry.unlink()
    cache.rmdir()
    result = run(system, "rollback")
    assert result.returncode == 0, result.stderr
    assert f"ArtifactsCache.Path {cache} does not exist" in result.stderr
    assert "this run goes without the cache" in result.stderr
    assert system.version("a", "1") == "factory"
    assert system.calls("a", "1")[-3:] == ["ArtifactRollback", "ArtifactFailure", "Cleanup"]
    assert run(system, "resume").returncode != 0  # the deployment has ended


def test_a_manifest_store_that_cannot_be_a_directory_is_refused_before_journaling(
    unit: tuple[System, Path], artifacts: Path
) -> None:
    """Found only at the end, it would fail a deployment whose every Component committed."""
    system, manifest = unit
    blocker = system.root / "not-a-dir"
    blocker.write_text("")
    system.write_config({"ArtifactSources": [{"Type": "directory", "Path": str(artifacts)}],
                         "ManifestStore": str(blocker / "manifests")})
    expected = f"ManifestStore {blocker / 'manifests'}: {blocker} is not a directory"
    for command in (["validate"], ["install", str(manifest)]):
        result = run(system, *command)
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr
    assert deployments(system) == 0
    assert system.calls("a", "1") == []


def test_a_huge_bad_value_is_shown_cut_short(unit: tuple[System, Path]) -> None:
    system, _ = unit
    system.write_config({"LogLevel": "x" * 100_000})
    result = run(system, "validate")
    assert result.returncode == 2
    # the log line escapes the quotes of the message
    assert (f'option LogLevel: expected one of trace, debug, info, warning, error, fatal, '
            f'got \\"{"x" * 76}..."') in result.stderr
    assert len(result.stderr) < 1000
