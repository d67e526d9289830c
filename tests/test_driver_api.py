# ruff: noqa: E501  (tables of expected messages read better unwrapped)
"""The public driver API: orchestrator_core.driver_api, the args helper, the API version.

Drivers under test are real packages: a module and a ``.dist-info`` with its entry point,
put on ``PYTHONPATH`` of a real ``mender-orchestrator`` process.
"""

from __future__ import annotations

import ast
import logging
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pluggy
import pytest
from systems import CLI, REPO, System

from orchestrator_core import api_version, driver_api, drivers, hookspecs, progress, retry
from orchestrator_core.args import InterfaceArgs, parser_of
from orchestrator_core.context import Component, InterfaceContext
from orchestrator_core.errors import ConfigError, InterfaceError, RetryableInterfaceError

TEMPLATE_DRIVER = (
    REPO / "driver-template" / "{{cookiecutter.__project_slug}}"
    / "{{cookiecutter.package_name}}" / "driver.py"
)  # fmt: skip
DRIVER_SOURCES = [
    *sorted((REPO / "drivers" / "canbus" / "mender_orchestrator_canbus").rglob("*.py")),
    *sorted((REPO / "drivers" / "i2c" / "mender_orchestrator_i2c").rglob("*.py")),
    *sorted((REPO / "drivers" / "mcuboot" / "mender_orchestrator_mcuboot").rglob("*.py")),
    TEMPLATE_DRIVER,
]


def install_vendor_driver(root: Path, name: str, source: str) -> Path:
    """A driver package ``vendor_<name>`` registered as driver NAME; returns the directory to
    put on PYTHONPATH."""
    site = root / "site"
    module = f"vendor_{name}"
    (site / f"{module}-1.0.dist-info").mkdir(parents=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    (site / f"{module}-1.0.dist-info" / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n"
    )
    (site / f"{module}-1.0.dist-info" / "entry_points.txt").write_text(
        f"[mender_orchestrator.drivers]\n{name} = {module}:Driver\n"
    )
    return site


DRIVER_TEMPLATE = """
from orchestrator_core.driver_api import Component, InterfaceContext, hookimpl

class Driver:
    driver_api = {declared!r}

    def __init__(self, component: Component) -> None:
        self.component = component

    @hookimpl
    def identity(self, ctx: InterfaceContext) -> str:
        return "unit-1"

    @hookimpl
    def provides(self, ctx: InterfaceContext) -> dict[str, str]:
        return {{"rootfs-image.{name}.version": "1.0"}}
"""


def vendor_system(system: System, name: str, declared: str | None) -> dict[str, str]:
    site = install_vendor_driver(
        system.root, name, DRIVER_TEMPLATE.format(declared=declared, name=name)
    )
    system.write_topology(
        'api_version: "mender/v1"\nkind: "topology"\nsystem_type: "box"\ncomponents:\n'
        f"  - component_type: unit\n    interface: {name}\n"
    )
    return {"PYTHONPATH": str(site)}


# --------------------------------------------------------------------------- the public module


def test_bundled_and_template_drivers_import_only_the_public_api() -> None:
    offenders = []
    for path in DRIVER_SOURCES:
        # the template's Jinja placeholders stand for names
        source = re.sub(r"\{\{.*?\}\}", "Name", path.read_text())
        for node in ast.walk(ast.parse(source)):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            offenders += [
                f"{path.relative_to(REPO)}: {n}"
                for n in names
                if n.split(".")[0] == "orchestrator_core" and n != "orchestrator_core.driver_api"
            ]
    assert offenders == []
    assert len(DRIVER_SOURCES) > 10


def test_driver_api_exports_what_drivers_need() -> None:
    for name in ("InterfaceContext", "RebootNeed", "ArtifactInfo", "InterfaceError",
                 "ConfigError", "hookimpl", "InterfaceArgs", "DRIVER_API_VERSION", "PreviousArtifact",
                 "RetryableInterfaceError", "write_atomically", "HostRecord", "HostRecordFile",
                 "host_record_directory"):  # fmt: skip
        assert name in driver_api.__all__
        assert getattr(driver_api, name) is not None
    assert driver_api.DRIVER_API_VERSION == api_version.DRIVER_API_VERSION == "1.2"


def test_the_core_wheel_ships_py_typed(tmp_path: Path) -> None:
    source = tmp_path / "core"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "drivers",
        "driver-template", "tests", "bench", "examples", "support"))  # fmt: skip
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
         str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("mender_orchestrator_py-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "orchestrator_core/py.typed" in names
    assert "orchestrator_core/driver_api.py" in names


# --------------------------------------------------------------------------- the args helper


def parser() -> InterfaceArgs:
    made = InterfaceArgs("seat", description="A seat.")
    made.add_argument("--bus", required=True, help="the I2C bus number")
    made.add_argument("--speed", type=driver_api.integer(1, 400), default=100)
    made.add_argument("--timeout", type=driver_api.seconds(), default=5.0)
    made.add_argument("--fast", action="store_true")
    return made


SEAT = Component("seat_heating", "seat", position=4)


def refused(*args: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parser().parse(Component("seat_heating", "seat", args, position=4))
    message = caught.value.message
    assert message.startswith(f"seat_heating[4] (interface seat): invalid interface_args {list(args)}: ")
    assert message.endswith(" (`mender-orchestrator drivers seat` lists the arguments)")
    assert "\n" not in message
    assert caught.value.exit_code == 2
    return message


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "argument --bus is missing: the I2C bus number"),
        (("--bus=1", "--speed=fast"), "argument --speed: expected an integer (decimal or 0x-prefixed hex), got 'fast'"),
        (("--bus=1", "--speed=0x200"), "argument --speed: expected a value from 0x1 to 0x190, got '0x200'"),
        (("--bus=1", "--timeout=inf"), "argument --timeout: expected a number of seconds above 0 and at most 86400, got 'inf'"),
        (("--bus=1", "--bus=2"), "argument --bus: given twice"),
        (("--bus=1", "--sp=3"), "unrecognized arguments: --sp=3; the seat driver takes --bus, --speed, --timeout, --fast"),
        (("--bus=1", "--help"), "unrecognized arguments: --help"),
        (("--bus",), "argument --bus: expected one argument"),
        (("1",), "unrecognized arguments: 1"),
    ],
)  # fmt: skip
def test_bad_arguments_are_a_config_error_naming_argument_and_component(
    args: tuple[str, ...], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert expected in refused(*args)
    assert capsys.readouterr() == ("", "")  # argparse printed nothing and did not exit


def test_good_arguments_take_both_spellings() -> None:
    parsed = parser().parse(Component("seat_heating", "seat", ("--bus", "3", "--speed=0x10")))
    assert (parsed.bus, parsed.speed, parsed.timeout, parsed.fast) == ("3", 16, 5.0, False)
    assert InterfaceArgs.given(Component("c", "seat", ("--speed", "0x10")), "--speed") == "0x10"


def test_help_text_marks_required_options() -> None:
    text = parser().format_help()
    assert text.startswith("usage: seat [--bus BUS]")
    assert "the I2C bus number (required)" in text


def test_parser_of_takes_an_attribute_or_a_factory_function() -> None:
    made = parser()

    class WithParser:
        interface_args_parser = made

    class WithFunction:
        interface_args_parser = staticmethod(lambda: made)

    assert parser_of(WithParser) is made
    assert parser_of(WithFunction) is made
    assert parser_of(object()) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("i2c", ["i2c: in-process driver mender_orchestrator_i2c.driver:I2CDriver",
                 "Driver API: it declares >=1.2,<2; this mender-orchestrator provides 1.2",
                 "", "interface_args:", "usage: i2c [--bus BUS] [--address ADDRESS] [--flash-base FLASH_BASE]"]),
        ("canbus", ["canbus: in-process driver mender_orchestrator_canbus.driver:CanbusDriver",
                    "Driver API: it declares >=1.1,<2; this mender-orchestrator provides 1.2",
                    "", "interface_args:", "usage: canbus [--interface INTERFACE] [--channel CHANNEL] [--bitrate BITRATE]"]),
    ],
)  # fmt: skip
def test_drivers_name_shows_the_arguments(system: System, name: str, expected: list[str]) -> None:
    result = system.run("drivers", name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:5] == expected
    assert "  --bus BUS             N for /dev/i2c-N" in result.stdout or name != "i2c"
    assert "  --p2-timeout P2_TIMEOUT" in result.stdout or name != "canbus"


def test_drivers_name_for_an_executable_and_for_nothing(system: System) -> None:
    system.add_interface("unit")
    shown = system.run("drivers", "unit")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        f"unit: executable Interface {system.interfaces / 'unit'}",
        "Its interface_args are passed to it as they are; see its documentation.",
    ]
    missing = system.run("drivers", "nothing-here")
    assert missing.returncode == 2
    assert "Interface 'nothing-here' not found" in missing.stderr
    assert "Traceback" not in missing.stderr


# --------------------------------------------------------------------------- the API version


@pytest.mark.parametrize(
    ("spec", "admitted"),
    [(">=1.0,<2", True), (">=1,<2", True), ("<2", True), (">=1.1", False), (">=2,<3", False),
     ("==1", True), ("!=1.0", False), ("> 0.9 , <= 1.0", True)],
)  # fmt: skip
def test_version_ranges(spec: str, admitted: bool) -> None:
    assert api_version.in_range("1.0", spec) is admitted


@pytest.mark.parametrize("spec", ["~=1.0", ">=1.x", "", ">=1,,<2", "1.0"])
def test_a_malformed_range_is_refused_by_name(spec: str) -> None:
    with pytest.raises(api_version.IncompatibleDriver, match=f"driver 'x': driver_api {spec!r} is not a version range"):
        api_version.check_driver(spec, "'x'")


def test_the_loader_refuses_an_incompatible_driver_naming_both_versions(system: System) -> None:
    env = vendor_system(system, "seat", ">=2.0,<3")
    refusal = (
        "unit[0] (interface seat): driver 'seat' (vendor_seat:Driver) supports driver API "
        ">=2.0,<3 but this mender-orchestrator provides driver API 1.2: install a release of "
        "the driver made for driver API 1.2"
    )
    for command, exit_code in (("show-provides", 1), ("drivers", 2)):
        result = system.run(command, env=env)
        assert result.returncode == exit_code, result.stderr
        assert refusal in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("declared", [">=1.0,<2", None])
def test_the_loader_takes_a_compatible_or_undeclared_driver(
    system: System, declared: str | None
) -> None:
    env = vendor_system(system, "seat", declared)
    result = system.run("show-provides", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "unit.unit-1.device_type=unit",
        "unit.unit-1.rootfs-image.seat.version=1.0",
    ]


def test_bundled_drivers_bound_their_core_dependency() -> None:
    import tomllib

    for project in (REPO / "drivers" / "canbus", REPO / "drivers" / "i2c",
                    REPO / "drivers" / "mcuboot",
                    REPO / "driver-template" / "{{cookiecutter.__project_slug}}"):  # fmt: skip
        text = (project / "pyproject.toml").read_text()
        if "{{" in text:
            text = text.replace("{{", "").replace("}}", "")
        dependencies = tomllib.loads(text)["project"]["dependencies"]
        assert "mender-orchestrator-py>=0.1,<0.2" in dependencies, project


# --------------------------------------------------------------------------- progress, retries

WORKING_DRIVER = """
import os
import time
from pathlib import Path

from orchestrator_core.driver_api import (
    Component, InterfaceContext, InterfaceTimeout, RebootNeed, RetryableInterfaceError, hookimpl,
)

STATE = Path(os.environ["VENDOR_STATE"])


def busy(what: str) -> None:
    # the first BUSY_<WHAT> calls find the bus busy
    counter = STATE / f"calls-{what}"
    calls = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    if calls <= int(os.environ.get(f"BUSY_{what.upper()}", "0")):
        raise RetryableInterfaceError(f"{what}: the bus is busy (call {calls})")


class Driver:
    driver_api = ">=1.0,<2"

    def __init__(self, component: Component) -> None:
        self.component = component

    @hookimpl
    def identity(self, ctx: InterfaceContext) -> str:
        busy("identity")
        return "unit-1"

    @hookimpl
    def provides(self, ctx: InterfaceContext) -> dict[str, str]:
        version = STATE / "version"
        return {"rootfs-image.seat.version": version.read_text() if version.exists() else "1.0"}

    @hookimpl
    def needs_artifact_reboot(self, ctx: InterfaceContext) -> RebootNeed:
        return RebootNeed.NO

    @hookimpl
    def artifact_install(self, ctx: InterfaceContext) -> None:
        busy("install")
        total = 65536
        for done in range(0, 32769, 4096):  # nine reports within a second: one is journaled
            ctx.progress(done, total, "bytes flashed")
        time.sleep(1.05)
        ctx.progress(49152, total, "bytes flashed")
        (STATE / "waiting").touch()
        while not (STATE / "go").exists():
            if time.monotonic() > ctx.deadline:
                raise InterfaceTimeout("nobody said go")
            time.sleep(0.02)
        ctx.progress(total, total, "bytes flashed")
        (STATE / "version").write_text(ctx.artifact.version_for("seat"))
"""


@pytest.fixture
def seat(system: System, tmp_path: Path) -> tuple[System, dict[str, str], Path]:
    """A System whose one Component is driven by WORKING_DRIVER, and a Manifest to 2.0."""
    site = install_vendor_driver(system.root, "seat", WORKING_DRIVER)
    state = tmp_path / "device"
    state.mkdir()
    system.write_topology(
        'api_version: "mender/v1"\nkind: "topology"\nsystem_type: "box"\ncomponents:\n'
        "  - component_type: unit\n    interface: seat\n"
    )
    payload = tmp_path / "image.bin"
    payload.write_bytes(b"\x5a" * 4096)
    artifact = tmp_path / "seat-2.0.mender"
    subprocess.run(
        ["mender-artifact", "write", "module-image", "-T", "seat", "-t", "unit", "-n", "seat-2.0",
         "--software-version", "2.0", "-f", str(payload), "-o", str(artifact)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        'api_version: "mender/v1"\nkind: "manifest"\nname: "box-2.0"\n'
        'system_types_compatible: ["box"]\ncomponent_types:\n  unit:\n'
        f"    artifact_name: seat-2.0\n    artifact_path: {artifact}\n"
        "    update_strategy: {order: 10}\n"
    )
    return system, {"PYTHONPATH": str(site), "VENDOR_STATE": str(state)}, manifest


def wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.skipif(shutil.which("mender-artifact") is None, reason="needs mender-artifact")
def test_progress_reaches_the_journal_rate_limited_and_status_shows_it(
    seat: tuple[System, dict[str, str], Path],
) -> None:
    system, env, manifest = seat
    state = Path(env["VENDOR_STATE"])
    process = subprocess.Popen(
        [*CLI, "install", str(manifest)], env={**system.env, **env}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(state / "waiting", process)
        deadline = time.monotonic() + 10
        while True:  # the report is committed within the journal's flush delay
            status = system.run("status", env=env)
            running = [line for line in status.stdout.splitlines() if "running now" in line]
            if any("48.0 KiB" in line for line in running) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        (state / "go").touch()
        _out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert status.returncode == 0, status.stderr
    (line,) = running
    assert " ArtifactInstall " in line and " unit/unit-1 " in line
    assert line.endswith(", 48.0/64.0 KiB flashed (75%)"), line

    with sqlite3.connect(system.datastore / "journal.sqlite") as db:
        reports = db.execute(
            "SELECT component, value, message FROM event WHERE kind = 'progress' ORDER BY id"
        ).fetchall()
    assert reports == [
        ("unit/unit-1", "0/65536 bytes flashed", "bytes flashed"),
        ("unit/unit-1", "49152/65536 bytes flashed", "bytes flashed"),
        ("unit/unit-1", "65536/65536 bytes flashed", "bytes flashed"),
    ]
    after = system.run("status", env=env)
    assert "running now" not in after.stdout  # a finished state shows its result instead


def test_the_live_line_shows_each_components_progress() -> None:
    observer = progress.ProgressObserver()
    observer.step_started(10, "ArtifactInstall", ["ecu/7", "mcu/1"])
    recorded: list[tuple[str, str]] = []
    report = observer.sink("ecu/7", lambda value, what: recorded.append((value, what)))
    for done in (0, 1024, 2048):
        report(done, 4096, "bytes flashed")
    report(4096, 4096, "bytes flashed")
    observer.sink("mcu/1", lambda value, what: None)(3, None, "blocks")
    observer._rows["ecu/7"].started = observer._rows["mcu/1"].started = 100.0
    assert observer.lines(101.0) == [
        "order group 10: ArtifactInstall (0/2 Components done)",
        "  ecu/7  running 1s, 4.0/4.0 KiB flashed (100%)",
        "  mcu/1  running 1s, 3/? blocks",
    ]
    observer.step_finished()
    # the journal takes the first report, then at most one a second, and always the last
    assert recorded == [("0/4096 bytes flashed", "bytes flashed"),
                        ("4096/4096 bytes flashed", "bytes flashed")]
    with pytest.raises(ValueError, match="counts cannot be negative"):
        report(-1, 4096, "bytes flashed")


def busy_twice() -> Callable[[], str]:
    calls = []

    def call() -> str:
        calls.append(time.monotonic())
        if len(calls) <= 2:
            raise RetryableInterfaceError(f"bus busy (call {len(calls)})")
        return "done"

    call.calls = calls  # type: ignore[attr-defined]
    return call


def context(timeout: float) -> InterfaceContext:
    return InterfaceContext(SEAT, logging.getLogger("test"), timeout)


def test_a_transient_fault_is_retried_with_backoff() -> None:
    call = busy_twice()
    assert retry.call_with_retries(call, "identity", context(30)) == "done"
    calls = call.calls  # type: ignore[attr-defined]
    assert len(calls) == 3
    assert calls[1] - calls[0] >= retry.FIRST_WAIT
    assert calls[2] - calls[1] >= 2 * retry.FIRST_WAIT


def test_retries_stop_at_the_deadline_and_after_the_last_try() -> None:
    with pytest.raises(InterfaceError) as caught:
        retry.call_with_retries(busy_twice(), "download", context(0.05))
    assert not isinstance(caught.value, RetryableInterfaceError)  # fatal now
    assert caught.value.message == (
        "bus busy (call 1) (a transient fault; download was called 1 time, "
        "no time left before the deadline)"
    )

    def always() -> None:
        raise RetryableInterfaceError("bus busy")

    started = time.monotonic()
    with pytest.raises(InterfaceError, match=r"bus busy \(a transient fault; artifact_install "
                       r"was called 5 times, no tries left\)"):  # fmt: skip
        retry.call_with_retries(always, "artifact_install", context(30))
    assert time.monotonic() - started >= 0.1 + 0.2 + 0.4 + 0.8


def test_a_fatal_fault_is_not_retried() -> None:
    calls = []

    def fatal() -> None:
        calls.append(1)
        raise InterfaceError("flash broken")

    with pytest.raises(InterfaceError, match=r"^flash broken$"):
        retry.call_with_retries(fatal, "artifact_install", context(30))
    assert calls == [1]


def test_queries_are_retried_through_the_driver_layer(
    seat: tuple[System, dict[str, str], Path],
) -> None:
    system, env, _manifest = seat
    shown = system.run("show-provides", env={**env, "BUSY_IDENTITY": "2"})
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "unit.unit-1.device_type=unit",
        "unit.unit-1.rootfs-image.seat.version=1.0",
    ]
    assert (Path(env["VENDOR_STATE"]) / "calls-identity").read_text() == "3"
    assert "identity failed with a transient fault, calling it again in 0.1s" in shown.stderr

    given_up = system.run("show-provides", env={**env, "BUSY_IDENTITY": "99"})
    assert given_up.returncode != 0
    assert "was called 5 times, no tries left" in given_up.stderr


@pytest.mark.skipif(shutil.which("mender-artifact") is None, reason="needs mender-artifact")
def test_a_state_is_retried_by_the_engine(seat: tuple[System, dict[str, str], Path]) -> None:
    system, env, manifest = seat
    (Path(env["VENDOR_STATE"]) / "go").touch()
    result = system.run("install", str(manifest), env={**env, "BUSY_INSTALL": "1"})
    assert result.returncode == 0, result.stderr
    assert (Path(env["VENDOR_STATE"]) / "calls-install").read_text() == "2"
    assert (Path(env["VENDOR_STATE"]) / "version").read_text() == "2.0"
    assert "artifact_install failed with a transient fault" in result.stderr


# --------------------------------------------------------------------------- the typed base

HOOKS = sorted(
    name
    for name, value in vars(hookspecs).items()
    if callable(value) and hasattr(value, "mender_orchestrator_spec")
    and name != "artifact_source_open"  # a global hook, not a driver's
)  # fmt: skip


def test_the_base_documents_every_hook_without_being_one() -> None:
    documented = sorted(
        name for name, value in vars(driver_api.DriverBase).items()
        if callable(value) and not name.startswith("_")
    )  # fmt: skip
    assert documented == HOOKS
    for name in HOOKS:
        method = getattr(driver_api.DriverBase, name)
        assert method.__doc__, name
        # not marked: a hook a subclass leaves out gets the protocol default from the engine
        assert not hasattr(method, "mender_orchestrator_impl"), name


def test_a_subclass_runs_its_marked_hooks_and_protocol_defaults_for_the_rest(
    tmp_path: Path,
) -> None:
    class Minimal(driver_api.DriverBase):
        @driver_api.hookimpl
        def identity(self, ctx: InterfaceContext) -> str:
            return "m-1"

        @driver_api.hookimpl
        def provides(self, ctx: InterfaceContext) -> dict[str, str]:
            return {"rootfs-image.minimal.version": "1"}

    component = Component("unit", "minimal")
    resolution = drivers.Resolution("minimal", "driver", "test:Minimal")
    driver = drivers.ComponentDriver(component, resolution, Minimal(component))
    ctx = driver.context(log=logging.getLogger("test"), timeout_seconds=5)
    assert driver.identity(ctx) == "m-1"
    assert driver.needs_unpacked_artifact(ctx) is True  # the protocol's default
    assert driver.needs_artifact_reboot(ctx) is driver_api.RebootNeed.NO
    assert driver.supports_rollback(ctx) is False
    assert driver.inventory(ctx) == []
    driver.run_state("artifact_install", ctx)  # succeeds, as for an executable
    assert isinstance(ctx.hook, pluggy.HookRelay)


def test_mypy_checks_a_driver_against_the_base(tmp_path: Path) -> None:
    source = tmp_path / "vendor_wrong.py"
    source.write_text(textwrap.dedent("""
        from orchestrator_core.driver_api import DriverBase, InterfaceContext, hookimpl

        class Wrong(DriverBase):
            @hookimpl
            def identity(self, ctx: InterfaceContext) -> int:
                return 7

            @hookimpl
            def provides(self, ctx: InterfaceContext) -> dict[str, str]:
                return {}

            @hookimpl
            def artifact_install(self, context: InterfaceContext, force: bool) -> None:
                ctx = context
                ctx.progress(1, 2, "bytes")
                ctx.progress("1", 2, "bytes")
    """))
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(source)],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO,
    )  # fmt: skip
    errors = [line.split(": error: ")[1] for line in checked.stdout.splitlines() if ": error: " in line]
    assert errors == [
        'Return type "int" of "identity" incompatible with return type "str | None" in supertype "orchestrator_core.driver_base.DriverBase"  [override]',
        'Signature of "artifact_install" incompatible with supertype "orchestrator_core.driver_base.DriverBase"  [override]',
        'Argument 1 to "progress" of "InterfaceContext" has incompatible type "str"; expected "int"  [arg-type]',
    ], checked.stdout


def test_a_download_that_read_the_payload_is_not_retried() -> None:
    class Feed:
        consumed = True

    ctx = context(30)
    ctx.payload = Feed()  # type: ignore[assignment]
    calls = []

    def download() -> None:
        calls.append(1)
        raise RetryableInterfaceError("link dropped")

    with pytest.raises(InterfaceError) as caught:
        retry.call_with_retries(download, "download", ctx)
    assert calls == [1]
    assert caught.value.message == (
        "link dropped (a transient fault; download was called 1 time, not called again: it "
        "had started reading the payload)"
    )
