"""What a person sees of a deployment: ``status`` (the step running now, any past
deployment), ``history``, errors on a terminal, the live view, the HTML report."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from systems import CLI, System
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
    assert any(re.search(r"install  ArtifactInstall +rtos/rtos-1 +\d+\.\d\ds  FAILED: ", line)
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
