"""The driver API's host record: what a driver learnt about a device, kept for the queries."""

from __future__ import annotations

import json
import logging
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from orchestrator_core import driver_api
from orchestrator_core.driver_api import HostRecord, HostRecordFile, host_record_directory


@dataclass(frozen=True)
class Board(HostRecord):
    fixed: ClassVar[tuple[str, ...]] = ("serial",)

    serial: str | None = None
    version: str | None = None
    slot: int | None = None


def test_a_device_never_recorded_reads_as_an_empty_record(tmp_path: Path) -> None:
    records = HostRecordFile(tmp_path / "state", "/dev/ttyUSB0", Board)
    assert records.load() == Board()
    assert not records.load().complete
    assert not (tmp_path / "state").exists()  # a query that reads nothing writes nothing


def test_the_file_is_named_after_the_device_and_written_privately(tmp_path: Path) -> None:
    state = tmp_path / "deep" / "state"
    records = HostRecordFile(state, "/dev/i2c-1-0x42", Board)
    saved = records.update(serial="A1", version="1.0", slot=0)
    assert saved == Board("A1", "1.0", 0) and saved.complete
    # the names the i2c and esp32 drivers wrote before the facility moved to the core
    assert records.path == state / "dev_i2c-1-0x42.json"
    assert HostRecordFile(state, "sim:/tmp/x y", Board).path.name == "sim_tmp_x_y.json"
    assert HostRecordFile(state, "../..", Board).path.parent == state
    assert json.loads(records.path.read_text()) == {"serial": "A1", "version": "1.0", "slot": 0}
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE(records.path.stat().st_mode) == 0o600
    assert [p.name for p in state.iterdir()] == ["dev_i2c-1-0x42.json"]  # no temporary left


def test_a_fixed_field_keeps_its_first_value(tmp_path: Path) -> None:
    records = HostRecordFile(tmp_path, "port", Board)
    records.update(version="1.0")
    records.update(serial="first")
    assert records.update(serial="second", version="2.0") == Board("first", "2.0", None)
    assert records.load() == Board("first", "2.0", None)


def test_unknown_keys_are_passed_over_and_a_broken_file_reads_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = HostRecordFile(tmp_path, "port", Board)
    records.path.write_text('{"serial": "S", "written_by_a_newer_driver": 1}')
    assert records.load() == Board(serial="S")
    for broken in ("{not json", "[1, 2]", '{"slot": 1, "serial": }'):
        records.path.write_text(broken)
        with caplog.at_level(logging.WARNING, logger="mender_orchestrator.host_record"):
            assert records.load() == Board()
        assert f"{records.path} is unreadable" in caplog.text
        caplog.clear()


def test_a_failed_write_leaves_the_old_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = HostRecordFile(tmp_path, "port", Board)
    records.update(serial="S", version="1.0")

    def power_cut(*args: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("orchestrator_core.atomic.os.replace", power_cut)
    with pytest.raises(OSError, match="Input/output error"):
        records.update(version="2.0")
    monkeypatch.undo()
    assert records.load() == Board(serial="S", version="1.0")
    assert [p.name for p in tmp_path.iterdir()] == ["port.json"]


def test_the_default_directory_follows_the_datastore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MENDER_ORCHESTRATOR_DATASTORE_DIR", "/srv/orch")
    assert host_record_directory("esp32") == Path("/srv/orch/esp32")
    monkeypatch.delenv("MENDER_ORCHESTRATOR_DATASTORE_DIR")
    assert host_record_directory("i2c") == Path("/var/lib/mender-orchestrator/i2c")
    assert {"HostRecord", "HostRecordFile", "host_record_directory"} <= set(driver_api.__all__)
