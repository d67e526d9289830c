"""Planning reads each Artifact once: component types that name the same Artifact share one
read of its header, and a directory of files not named after their Artifacts has each file's
header read once while the plan looks for all of them (not once per component type)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from systems import System
from unit_systems import ARTIFACT, build_artifact, unit_system

from orchestrator_core import planner
from orchestrator_core.artifact import sources
from orchestrator_core.config import Config, load_config
from orchestrator_core.errors import ArtifactError, ValidationErrors
from orchestrator_core.manifest import load_manifest
from orchestrator_core.topology import load_topology

TYPES = ("a", "b", "c")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifact(tmp_path_factory.mktemp("artifacts"), TYPES)


def plan(system: System, manifest: Path, monkeypatch: pytest.MonkeyPatch) -> planner.Plan:
    for name, value in system.env.items():  # the Interfaces run in this process's environment
        monkeypatch.setenv(name, value)
    config = load_config(system.env)
    topology = load_topology(config.topology_file, None)
    return planner.make_plan(config, topology, load_manifest(manifest))


def count_calls(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    real = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_component_types_naming_one_artifact_share_one_read_of_it(
    tmp_path: Path, artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system, manifest = unit_system(tmp_path, artifacts, [(t, "No") for t in TYPES])
    reads = count_calls(monkeypatch, planner, "_read_artifact")
    made = plan(system, manifest, monkeypatch)
    assert [(name, path) for _config, name, path in reads] == [(ARTIFACT, None)]
    assert sorted(c.component.component_type for c in made.components) == list(TYPES)
    assert {c.artifact["source"] for c in made.components} == {str(artifacts / "unit-v2.mender")}


def test_a_missing_artifact_named_by_two_types_is_reported_for_each(
    tmp_path: Path, artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system, manifest = unit_system(tmp_path, artifacts, [("a", "No"), ("b", "No")])
    manifest.write_text(manifest.read_text().replace(ARTIFACT, "gone-v9"))
    reads = count_calls(monkeypatch, planner, "_read_artifact")
    with pytest.raises(ValidationErrors) as raised:
        plan(system, manifest, monkeypatch)
    assert len(reads) == 1
    assert [problem.split(":")[0] for problem in raised.value.problems] == [
        "component_type a",
        "component_type b",
    ]
    assert all("'gone-v9' not found" in problem for problem in raised.value.problems)


def store_of_other_names(tmp_path: Path, artifacts: Path) -> tuple[Path, Config]:
    """A directory source of three copies of the Artifact, none named after it, and a
    broken file named after the Artifact ``broken``."""
    store = tmp_path / "store"
    store.mkdir()
    for name in ("release-1", "release-2", "release-3"):
        shutil.copy(artifacts / "unit-v2.mender", store / f"{name}.mender")
    (store / "broken.mender").write_bytes((artifacts / "unit-v2.mender").read_bytes()[:1500])
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    (config_dir / "mender-orchestrator.conf").write_text(
        json.dumps({"ArtifactSources": [{"Type": "directory", "Path": str(store)}]})
    )
    config = load_config(
        {
            "MENDER_ORCHESTRATOR_CONF_DIR": str(config_dir),
            "MENDER_ORCHESTRATOR_DATASTORE_DIR": str(tmp_path / "datastore"),
            "MENDER_ORCHESTRATOR_DATA_DIR": str(tmp_path / "data"),
        }
    )
    return store, config


def test_while_names_are_remembered_each_file_of_a_directory_is_read_once(
    tmp_path: Path, artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, config = store_of_other_names(tmp_path, artifacts)
    reads = count_calls(monkeypatch, sources, "read_header")
    listings = count_calls(monkeypatch, Path, "glob")

    def look_up(name: str) -> str | None:
        found = sources.ConfiguredSources().artifact_source_open(name, config)
        if found is None:
            return None
        found[0].close()
        return found[1]

    broken = f"Artifact {store / 'broken.mender'}: truncated"
    with sources.names_remembered():
        assert look_up("other-v1") is None  # reads all four
        assert look_up("other-v2") is None  # reads none again
        assert look_up(ARTIFACT) == str(store / "release-1.mender")
        with pytest.raises(ArtifactError, match=f"not found in {store}: {broken}"):
            look_up("broken")
    assert (len(reads), len(listings)) == (4, 1)
    # outside a plan nothing is remembered: the directory may have changed meanwhile
    (store / "release-4.mender").write_bytes((artifacts / "unit-v2.mender").read_bytes())
    assert look_up("other-v1") is None
    assert (len(reads), len(listings)) == (9, 2)
    with pytest.raises(ArtifactError, match=f"not found in {store}: {broken}"):
        look_up("broken")
