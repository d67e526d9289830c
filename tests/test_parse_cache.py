"""The parsed-YAML cache: a hit is exactly what the parser returns, and nothing else is a hit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from systems import SIMULATED_UNIT, System

from orchestrator_core import parse_cache, yaml_loader
from orchestrator_core.errors import ConfigError
from orchestrator_core.yamlfile import parse_mapping

TEXT = "api_version: mender/v1\nkind: topology\nlist: [1, 2.5, true, null, 'x']\n"
TOPOLOGY = (
    "api_version: mender/v1\nkind: topology\nsystem_type: s\ncomponents:\n"
    "  - component_type: a\n    interface: unit\n    interface_args: ['1', 'No', 'Yes']\n"
)


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[Path]:
    parse_cache.use(tmp_path, may_create=True)
    yield tmp_path / parse_cache.FILE_NAME
    parse_cache.use(None)


def parse_and_keep(text: str) -> dict[str, object]:
    data = parse_mapping(text, "t.yaml", "Topology")
    parse_cache.keep(data)
    return data


def test_a_kept_parse_is_returned_without_parsing(
    cache: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed = parse_and_keep(TEXT)
    assert parsed == {"api_version": "mender/v1", "kind": "topology",
                      "list": [1, 2.5, True, None, "x"]}

    def no_parsing(*_: object) -> None:
        raise AssertionError("parsed again")

    monkeypatch.setattr(yaml_loader, "parse", no_parsing)
    again = parse_mapping(TEXT, "t.yaml", "Topology")
    assert again == parsed and again is not parsed
    assert [type(v) for v in again["list"]] == [int, float, bool, type(None), str]
    again["kind"] = "changed"  # the caller's copy: the next lookup is unchanged
    assert parse_mapping(TEXT, "t.yaml", "Topology")["kind"] == "topology"
    # one byte more is another text
    with pytest.raises(AssertionError, match="parsed again"):
        parse_mapping(TEXT + " ", "t.yaml", "Topology")


def test_a_parse_not_kept_is_not_stored(cache: Path) -> None:
    parse_mapping(TEXT, "t.yaml", "Topology")  # the caller found it invalid: no keep
    assert not cache.exists()
    assert parse_cache.lookup(TEXT) is None


@pytest.mark.parametrize("text", [
    "when: 2024-01-01\n",        # a date
    "1: one\n",                  # an int key (JSON would make it "1")
    "true: yes\n",               # a boolean key
    "s: !!set {a, b}\n",         # a set
    "b: !!binary aGVsbG8=\n",    # bytes
    "f: .inf\n",                 # not a JSON number
])
def test_results_json_does_not_hold_exactly_are_parsed_every_time(
    cache: Path, text: str,
) -> None:
    parse_and_keep(text)
    assert not cache.exists()
    assert parse_cache.lookup(text) is None


def test_entries_of_another_parser_or_a_damaged_file_are_misses(cache: Path) -> None:
    parse_and_keep(TEXT)
    stored = json.loads(cache.read_text())
    assert parse_cache.lookup(TEXT) is not None
    # PyYAML or yaml_loader.py changed (size, mtime): the key differs
    cache.write_text(json.dumps({**stored, "key": [*stored["key"][:-1], 0]}))
    assert parse_cache.lookup(TEXT) is None
    for damaged in ('{"key": [1', "", "[]", '{"key": null}', "\x00\xff"):
        cache.write_text(damaged)
        assert parse_cache.lookup(TEXT) is None
        assert parse_mapping(TEXT, "t.yaml", "Topology")["kind"] == "topology"
    # and the next kept parse replaces the damaged file
    parse_and_keep(TEXT)
    assert json.loads(cache.read_text()) == stored
    assert cache.stat().st_mode & 0o777 == 0o600


def test_the_newest_entries_are_kept(cache: Path) -> None:
    texts = [f"n: {i}\n" for i in range(parse_cache.MAX_ENTRIES + 2)]
    for text in texts:
        parse_and_keep(text)
    entries = json.loads(cache.read_text())["entries"]
    assert [e[0] for e in entries] == texts[::-1][: parse_cache.MAX_ENTRIES]
    assert parse_cache.lookup(texts[0]) is None
    assert parse_cache.lookup(texts[-1]) == {"n": parse_cache.MAX_ENTRIES + 1}


def test_without_may_create_an_existing_file_is_only_replaced(tmp_path: Path) -> None:
    parse_cache.use(tmp_path, may_create=False)
    try:
        parse_and_keep(TEXT)
        assert not (tmp_path / parse_cache.FILE_NAME).exists()
        (tmp_path / parse_cache.FILE_NAME).write_text("{}")
        parse_and_keep(TEXT)
        assert parse_cache.lookup(TEXT) is not None
    finally:
        parse_cache.use(None)


def test_errors_are_reported_the_same_with_a_cache_around(cache: Path) -> None:
    parse_and_keep(TEXT)
    with pytest.raises(ConfigError) as raised:
        parse_mapping("a: 1\na: 2\n", "t.yaml", "Topology")
    assert str(raised.value) == (
        "Topology t.yaml: invalid YAML at line 2 column 1: duplicate key 'a'"
    )
    assert parse_cache.lookup("a: 1\na: 2\n") is None


def test_a_topology_refused_leaves_the_cache_as_it_was(system: System) -> None:
    system.add_interface("unit", SIMULATED_UNIT)
    system.write_topology(TOPOLOGY)
    # a datastore with a journal, as after a first deployment: the cache may be made
    (system.datastore / "journal.sqlite").touch()
    assert system.run("show-provides").returncode == 0
    cache = system.datastore / parse_cache.FILE_NAME
    before = cache.read_bytes()
    assert json.loads(before)["entries"][0][0] == TOPOLOGY
    system.write_topology(TOPOLOGY.replace("system_type: s", "system_type: ''"))
    refused = system.run("show-provides")
    assert refused.returncode == 2
    assert "field system_type: expected a non-empty string" in refused.stderr
    assert cache.read_bytes() == before
