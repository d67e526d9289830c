"""What a person sees of a deployment: ``status`` (the step running now, any past
deployment), ``history``, errors on a terminal, the live view, the HTML report."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
from systems import CLI, REPO, System
from test_engine import artifacts, core, manifest  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("artifacts")


def wait_for(check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not callable(check) or not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_status_shows_the_step_running_now_with_its_elapsed_time(core: System) -> None:
    assert core.run("install", manifest("v1")).returncode == 0
    (core.device("rtos", "2") / "hang-ArtifactInstall").touch()
    (core.device("rtos", "2") / "calls").unlink()
    install = subprocess.Popen([*CLI, "install", manifest("v2")], env=core.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: "ArtifactInstall" in core.calls("rtos", "2"))
        time.sleep(1.2)
        lines = core.run("status").stdout.splitlines()
        assert lines[0] == "deployment 2: system-core-v2  status in progress"
        running = [line for line in lines if "running now" in line]
        assert len(running) == 1, lines
        found = re.fullmatch(r"  running now: group 20 install ArtifactInstall rtos/rtos-2 for "
                             r"(\d+\.\d)s", running[0])
        assert found, running
        assert float(found.group(1)) >= 1.0
        assert all(len(line) <= 120 for line in lines)
    finally:
        install.send_signal(signal.SIGTERM)
        assert install.wait(timeout=60) == 7
    # cut short: the state shows as interrupted, nothing runs now
    lines = core.run("status").stdout.splitlines()
    assert lines[0] == "deployment 2: system-core-v2  status in progress"
    assert not any("running now" in line for line in lines)
    assert any(re.search(r"install  ArtifactInstall +rtos/rtos-2 +did not finish \(interrupted\)$",
                         line) for line in lines), lines


def test_status_id_shows_any_past_deployment_and_names_states_as_people_say(
    core: System,
) -> None:
    assert core.run("install", manifest("v1")).returncode == 0
    (core.device("rtos", "1") / "fail-ArtifactInstall").touch()
    assert core.run("install", manifest("v2")).returncode == 1
    first = core.run("status", "1")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == "deployment 1: system-core-v1  status succeeded"
    second = core.run("status", "2").stdout.splitlines()
    assert second[0] == "deployment 2: system-core-v2  status failed, rolled back"
    assert any(re.search(r"install  ArtifactInstall +rtos/rtos-1 +\d+\.\d\ds  FAILED:", line)
               for line in second), second
    assert core.run("status").stdout.splitlines() == second  # the last one, by default
    history = core.run("history").stdout.splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.fullmatch(rf"   1  {stamp}  {stamp}  succeeded {{12}}system-core-v1", history[0])
    assert re.fullmatch(rf"   2  {stamp}  {stamp}  failed, rolled back  system-core-v2",
                        history[1])
    missing = core.run("status", "9")
    assert missing.returncode == 2
    assert 'msg="no deployment 9 in the journal (`history` lists them)"' in missing.stderr
    assert missing.stdout == ""


# --------------------------------------------------------------------------- on a terminal

ESCAPE = re.compile(r"\x1b\[(\d*)([A-Za-z])")


def screen(output: str) -> list[str]:
    """What a terminal shows after ``output``: carriage returns, erased lines and cursor-up
    applied, colours dropped (enough of a terminal for the sequences the tool writes)."""
    lines, row, col = [""], 0, 0
    position = 0
    while position < len(output):
        escape = ESCAPE.match(output, position)
        if escape:
            if escape.group(2) == "K":
                lines[row] = lines[row][:col]
            elif escape.group(2) == "A":
                row = max(0, row - int(escape.group(1) or 1))
            position = escape.end()
            continue
        char = output[position]
        position += 1
        if char == "\r":
            col = 0
        elif char == "\n":
            row, col = row + 1, 0
            if row == len(lines):
                lines.append("")
        else:
            lines[row] = lines[row][:col].ljust(col) + char + lines[row][col + 1:]
            col += 1
    return lines


class Terminal:
    """A command whose stderr is a real pseudo-terminal (stdout stays a pipe)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        import pty

        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        self.output = b""

    def read(self, timeout: float = 0.2) -> bool:
        """Take what the command wrote; False once it closed the terminal."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            return False
        self.output += data
        return bool(data)

    def until(self, check: object, timeout: float = 30) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if callable(check) and check(shown):
                return shown
            assert time.monotonic() < deadline, "\n".join(shown)
            self.read()

    def finish(self, timeout: float = 60) -> int:
        while self.read():
            pass
        os.close(self.master)
        return self.process.wait(timeout=timeout)

    def screen(self) -> list[str]:
        return screen(self.output.decode(errors="replace"))


def terminal_env(system: System, **extra: str) -> dict[str, str]:
    env = system.env
    env.pop("NO_COLOR", None)
    env.update({"TERM": "xterm-256color", **extra})
    return env


def test_an_error_on_a_terminal_reads_as_a_sentence_with_its_fix(system: System) -> None:
    terminal = Terminal([*CLI, "show-provides"], terminal_env(system))
    assert terminal.finish() == 2
    topology = system.datastore / "topology.yaml"
    assert terminal.screen() == [
        f"error: Topology {topology} does not exist",
        "  fix: put the Topology there or set `MENDER_ORCHESTRATOR_TOPOLOGY_DIR`",
        "",
    ]
    assert b"\x1b[31m" in terminal.output  # in red


@pytest.mark.parametrize("no_colour", [{"NO_COLOR": "1"}, {"TERM": "dumb"}])
def test_no_colour_when_the_user_or_the_terminal_says_so(
    system: System, no_colour: dict[str, str]
) -> None:
    terminal = Terminal([*CLI, "show-provides"], terminal_env(system, **no_colour))
    assert terminal.finish() == 2
    assert b"\x1b" not in terminal.output
    assert terminal.output.decode().startswith("error: Topology ")


def test_off_a_terminal_errors_keep_the_mender_log_format(system: System) -> None:
    result = system.run("show-provides")
    topology = system.datastore / "topology.yaml"
    assert re.fullmatch(
        r'record_id=1 severity=error time="\d{4}-[A-Z][a-z]{2}-\d\d \d\d:\d\d:\d\d\.\d{6}" '
        rf'name="Global" msg="Topology {re.escape(str(topology))} does not exist"\n',
        result.stderr,
    )


def test_the_live_view_shows_each_component_of_the_running_step(core: System) -> None:
    assert core.run("install", manifest("v1")).returncode == 0
    (core.device("rtos", "2") / "hang-ArtifactInstall").touch()
    terminal = Terminal([*CLI, "install", manifest("v2")], terminal_env(core))
    try:
        shown = terminal.until(lambda lines: any(
            re.fullmatch(r"  rtos/rtos-2  running [1-9]\d*s", line) for line in lines))
    finally:
        terminal.process.send_signal(signal.SIGTERM)
        code = terminal.finish()
    view = shown[shown.index("order group 20: ArtifactInstall (1/2 Components done)"):]
    assert re.fullmatch(r"  rtos/rtos-2  running \d+s", view[1]), view
    assert re.fullmatch(r"  rtos/rtos-1  done in \d+\.\ds", view[2]), view
    assert len(view) == 3, view
    # the log above it: each state of each Component as a line a person reads
    assert any(re.fullmatch(r"rtos/rtos-1 \(interface rtos-interface\): ArtifactInstall done "
                            r"in \d+\.\d\ds", line) for line in shown), shown
    assert all(len(line) <= 120 for line in shown)
    assert code == 7
    assert any(line.startswith("error: ") for line in terminal.screen())


def test_the_hints_are_the_readme_troubleshooting_table() -> None:
    from orchestrator_core.hints import HINTS

    readme = (REPO / "README.md").read_text()
    table = readme.split("## Troubleshooting by error message", 1)[1].split("\n\n")[1]
    fixes = [row.rsplit(" | ", 1)[1].rstrip(" |") for row in table.splitlines()[2:]]
    assert fixes == [hint for _, hint in HINTS]


# --------------------------------------------------------------------------- the HTML report


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Debian's chromium, headless, isolated from the network and the user's profile."""
    return subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
         "--v=0", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_report_renders_every_component_of_a_rolled_back_deployment_in_a_browser(
    tmp_path: Path,
) -> None:
    import sys

    sys.path.insert(0, str(REPO / "examples" / "virtual-vehicle"))
    from build_artifacts import build
    from vehicle import VirtualVehicle

    artifacts = tmp_path / "artifacts"
    build(artifacts)
    manifests = REPO / "examples" / "virtual-vehicle" / "manifests"
    page = tmp_path / "vehicle-v3.html"
    with VirtualVehicle(tmp_path / "vehicle", artifacts) as vehicle:
        for name, code in (("vehicle-v1", 0), ("vehicle-v2", 0), ("vehicle-v3", 1)):
            assert vehicle.run("install", manifests / f"{name}.yaml").returncode == code
        written = vehicle.run("report", "-o", page)
        assert written.returncode == 0, written.stderr
        missing = vehicle.run("report", "7", "-o", tmp_path / "none.html")
        assert missing.returncode == 2
        assert "no deployment 7 in the journal" in missing.stderr
        assert not (tmp_path / "none.html").exists()
        assert vehicle.run("report", "1").stdout.startswith("<!DOCTYPE html>")
    html = page.read_text()
    # self-contained: nothing is fetched, nothing runs
    assert not re.search(r"<script|<link|src=|href=|url\(|@import", html)

    shown = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert shown.returncode == 0, shown.stderr
    assert "CONSOLE" not in shown.stderr and "Uncaught" not in shown.stderr
    dom = shown.stdout
    assert "Deployment 3: vehicle-v3" in dom
    assert "failed, rolled back" in dom
    for key in ("ecu_brake_controller/SIM-BRAKE-0042",
                "seat_heating/stm32-460-5ea7000000000000000000a1",
                "telematics_control_unit/imei-356938035643809"):
        # its timeline row, its versions, its states
        assert dom.count(f">{key}<") >= 4, key
    assert "✗ ArtifactVerifyReboot failed" in dom
    assert "self-test of tcu-firmware-v2.5.0 failed after the reboot" in dom
    assert ("<td>seat_heating/stm32-460-5ea7000000000000000000a1</td><td>i2c</td>"
            "<td>seat-heating-fw-v1.2.0</td><td>seat-heating-fw-v1.3.0</td>"
            '<td class="">seat-heating-fw-v1.2.0</td>') in dom
    assert "Rollback path: ArtifactRollback (group 30) → " in dom

    shot = tmp_path / "report.png"
    drawn = chromium(tmp_path, "--window-size=1280,900", f"--screenshot={shot}", page.as_uri())
    assert drawn.returncode == 0, drawn.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rollback_someone_asked_for_reads_rolled_back(core: System) -> None:
    assert core.run("install", manifest("v1")).returncode == 0
    stopped = core.run("install", "--stop-before", "ArtifactCommit", manifest("v2"))
    assert stopped.returncode == 0, stopped.stderr
    assert core.run("status").stdout.splitlines()[0] == (
        "deployment 2: system-core-v2  status in progress")
    assert any(line == "  stopped before ArtifactCommit (install)"
               for line in core.run("status").stdout.splitlines())
    rollback = core.run("rollback")
    assert rollback.returncode == 0, rollback.stderr
    lines = core.run("status", "2").stdout.splitlines()
    assert lines[0] == "deployment 2: system-core-v2  status rolled back", lines
    assert "  rollback requested" in lines


# --------------------------------------------------------------------------- progress


def test_status_shows_a_component_s_progress_from_the_journal(tmp_path: Path) -> None:
    from orchestrator_core.journal import Journal, StepIdentity
    from orchestrator_core.report import status_lines

    journal = Journal(tmp_path / "journal.sqlite")
    plan = {"manifest_name": "m", "components": [{"key": "ecu/1", "skip_reason": None}]}
    deployment = journal.begin("m", b"", plan)
    journal.step_entered(
        deployment, 3, StepIdentity("state", "ArtifactInstall", 10, "install", ("ecu/1",)),
        ["ecu/1"],
    )
    journal.record(deployment, 3, "ecu/1", "progress", None, "10485760/41943040 bytes")
    lines = status_lines(journal, deployment, active=True)
    journal.close()
    assert re.fullmatch(r"  running now: group 10 install ArtifactInstall ecu/1 for \d+\.\ds, "
                        r"10\.0/40\.0 MiB \(25%\)", lines[2]), lines
    assert len(lines) == 3  # a progress event is no state of its own


def test_the_live_view_takes_what_a_driver_reports_through_ctx_progress() -> None:
    from orchestrator_core.progress import ProgressObserver

    observer = ProgressObserver()
    observer.step_started(10, "ArtifactInstall", ["ecu/1", "ecu/2"])
    observer.sink("ecu/1", lambda value, what: None)(3 * 1048576, 12 * 1048576, "bytes")
    observer.sink("ecu/2", lambda value, what: None)(7, None, "blocks")
    observer._rows["ecu/1"].started = observer._rows["ecu/2"].started = 100.0
    assert observer.lines(112.4) == [
        "order group 10: ArtifactInstall (0/2 Components done)",
        "  ecu/1  running 12s, 3.0/12.0 MiB (25%)",
        "  ecu/2  running 12s, 7/? blocks",
    ]
    observer.step_finished()
