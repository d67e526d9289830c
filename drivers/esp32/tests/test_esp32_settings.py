"""``interface_args``: the port by --port or through a device map, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from orchestrator_core.context import Component
from orchestrator_core.errors import ConfigError

from mender_orchestrator_esp32.settings import parse


def component(*args: str) -> Component:
    return Component("door_lock", "esp32", args)


def test_the_port_comes_from_the_device_map_by_instance(tmp_path: Path) -> None:
    ports = tmp_path / "esp32-ports"
    ports.write_text("# per vehicle\nwindow-lift = /dev/ttyUSB1\ndoor-lock=/dev/ttyUSB0\n")
    settings = parse(component("--instance=door-lock", f"--device-map={ports}", "--baud=921600"))
    assert (settings.port, settings.baud, settings.after) == ("/dev/ttyUSB0", 921600, "hard-reset")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "door_lock[0] (interface esp32): invalid interface_args []: the serial port is "
             "missing: give --port, or --instance and --device-map"),
        (("--port=/dev/ttyUSB0", "--instance=a"), "give either --port or --instance with "
                                                   "--device-map"),
        (("--instance=door-lock", "--device-map={map}"),
         "--device-map {map} has no entry for --instance=door-lock"),
        (("--instance=x", "--device-map={bad}"),
         "door_lock[0] (interface esp32): --device-map {bad} line 2: expected ID=PORT, got "
         "'/dev/ttyUSB3'"),
        (("--instance=x", "--device-map={missing}"), "--device-map {missing} cannot be read: "),
        (("--instance=x", "--device-map=relative/map"),
         "argument --device-map: expected an absolute path, got 'relative/map'"),
        (("--port=/dev/ttyUSB0", "--baud=fast"),
         "argument --baud: expected an integer (decimal or 0x-prefixed hex), got 'fast'"),
        (("--port=/dev/ttyUSB0", "--chip=esp32c5"), "argument --chip: invalid choice: 'esp32c5'"),
        (("--port=/dev/ttyUSB0", "--chip=esp32c6", "--after=watchdog-reset"),
         "argument --after=watchdog-reset does not start an app on --chip=esp32c6: use "
         "hard-reset"),
        (("--port=/dev/ttyUSB0", "--chip=esp32s2", "--after=soft-reset"),
         "argument --after=soft-reset does not start an app on --chip=esp32s2: use hard-reset "
         "or watchdog-reset"),
        (("--port=/dev/ttyUSB0", "--chip=esp32s3", "--after=soft-reset"),
         "argument --after=soft-reset does not start an app on --chip=esp32s3: use hard-reset "
         "or watchdog-reset"),
        (("--port=/dev/ttyUSB0", "--after=watchdog-reset"),
         "argument --after=watchdog-reset does not start an app on --chip=esp32: use hard-reset "
         "or soft-reset"),
        (("--port=/dev/ttyUSB0", "--flash-size=100K"),
         "argument --flash-size: expected a multiple of 64K, got 102400"),
    ],
)  # fmt: skip
def test_bad_arguments_are_named(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    (tmp_path / "map").write_text("window-lift=/dev/ttyUSB1\n")
    (tmp_path / "bad").write_text("a=/dev/ttyUSB2\n/dev/ttyUSB3\n")
    paths = {name: tmp_path / name for name in ("map", "bad", "missing")}
    with pytest.raises(ConfigError) as caught:
        parse(component(*(arg.format(**paths) for arg in args)))
    assert message.format(**paths) in str(caught.value)


def test_the_host_record_goes_to_the_datastore_unless_state_dir_says(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MENDER_ORCHESTRATOR_DATASTORE_DIR", str(tmp_path))
    assert parse(component("--port=/dev/ttyUSB0")).state_dir == tmp_path / "esp32"
    monkeypatch.delenv("MENDER_ORCHESTRATOR_DATASTORE_DIR")
    assert parse(component("--port=/dev/ttyUSB0")).state_dir == Path(
        "/var/lib/mender-orchestrator/esp32"
    )
    given = parse(component("--port=/dev/ttyUSB0", "--state-dir=/srv/esp32"))
    assert given.state_dir == Path("/srv/esp32")
    with pytest.raises(ConfigError, match="argument --state-dir: expected an absolute path"):
        parse(component("--port=/dev/ttyUSB0", "--state-dir=records"))
