"""The virtual vehicle demo (``make demo``): one System updated, updated again, rolled back.

    python examples/demo.py [--keep] [--workdir DIR]

It builds the Artifacts with our own writer, starts the simulators (a CAN bus server and a
brake ECU on it, a seat heater MCU on I2C, a battery MCU with MCUboot on SMP/UDP, a
telematics modem), deploys the Manifests
vehicle-v1, vehicle-v2 and vehicle-v3 with ``mender-orchestrator install``, and after each
prints what ``show-provides`` and ``status`` say. vehicle-v3 is meant to fail: its telematics
firmware fails its self-test, and the whole vehicle must come back to vehicle-v2.

Exit status 0 only if every step did what it should; everything it started is stopped.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
VEHICLE = HERE / "virtual-vehicle"
sys.path.insert(0, str(VEHICLE))

from build_artifacts import build  # noqa: E402
from vehicle import FACTORY, VehicleError, VirtualVehicle, versions_in  # noqa: E402

WIDTH = 100
OUTPUT_INDENT = 4  # a command's output, under the command; with it its lines fit 120 columns

INTRO = """\
A vehicle with five Components, each updated a different way: a telematics unit by an
executable Interface, a brake ECU by the canbus driver (UDS over CAN), a seat heater by the i2c
driver (STM32 bootloader), a battery MCU by the mcuboot driver (MCUboot over SMP), a door lock
by the esp32 driver (ESP32 ROM loader, A/B OTA slots). Three Manifests are deployed in turn;
the third fails on purpose and the orchestrator must roll the whole vehicle back."""


@dataclass(frozen=True)
class Step:
    manifest: str
    what: str
    succeeds: bool
    versions: dict[str, str]  # component_type -> the firmware it must run afterwards
    status_mentions: tuple[str, ...] = ()
    every_state: bool = False  # print each state ``status`` lists, not only the summary


V2 = {
    "door_lock": "door-lock-fw-v1.1.0",
    "ecu_brake_controller": "brake-ecu-firmware-v1.8.3",
    "seat_heating": "seat-heating-fw-v1.2.0",
    "telematics_control_unit": "tcu-firmware-v2.4.1",
    "battery_mcu": "3.1.0",
}
STEPS = (
    Step("vehicle-v1", "every Component leaves its factory firmware", True, {
        "door_lock": "door-lock-fw-v1.1.0",
        "ecu_brake_controller": "brake-ecu-firmware-v1.8.0",
        "seat_heating": "seat-heating-fw-v1.2.0",
        "telematics_control_unit": "tcu-firmware-v2.4.0",
        "battery_mcu": "3.1.0",
    }),
    Step("vehicle-v2", "new brake ECU and telematics firmware; the seat heater already runs "
         "its Artifact and is left alone", True, V2,
         ("left untouched, already runs seat-heating-fw-v1.2.0",
          "left untouched, already runs door-lock-fw-v1.1.0")),
    Step("vehicle-v3", "the new telematics firmware fails its self-test after the modem "
         "reboots: the whole vehicle must return to vehicle-v2", False, V2,
         ("status failed", "self-test of tcu-firmware-v2.5.0 failed",
          "ArtifactRollback", "ArtifactVerifyRollbackReboot"), every_state=True),
)
# a line of ``status`` for one state of one Component, and the end of one that went well:
# "  group  10 install  Download  ecu/SN-1  0.01s  ok" (queries: "ok = Yes")
STATE_LINE = re.compile(r"^\s*group\s+\d+ ")
WENT_WELL = re.compile(r"\s\d+\.\d+s\s+ok( = \S+)?$")


def say(text: str = "", indent: int = 0) -> None:
    prefix = " " * indent
    for line in text.split("\n"):
        print(textwrap.fill(line, WIDTH, initial_indent=prefix, subsequent_indent=prefix + "  ",
                            break_on_hyphens=False, break_long_words=False) if line else "")
    sys.stdout.flush()


def output(text: str) -> None:
    """A command's output as it printed it (long lines are the terminal's to wrap)."""
    for line in text.splitlines():
        print(" " * OUTPUT_INDENT + line)


def status_summary(status: str) -> str:
    """``status`` without its state lines that went well: what a newcomer needs of a
    deployment that did what it should (the full list stays one command away)."""
    lines = status.splitlines()
    well = [line for line in lines if STATE_LINE.match(line) and WENT_WELL.search(line)]
    kept = [line for line in lines if line not in well]
    elided = len(well)
    if elided:
        kept.append(f"  ({elided} states ran and succeeded; `mender-orchestrator status` "
                    f"lists each with its time)")
    return "\n".join(kept)


def show_table(versions: dict[str, str]) -> None:
    for component_type, version in sorted(versions.items()):
        say(f"{component_type:<26} {version}", 6)


def last_message(stderr: str) -> str:
    """The orchestrator's closing log record, as text."""
    for line in reversed(stderr.strip().splitlines()):
        if ' msg="' in line:
            return line.split(' msg="', 1)[1].rstrip('"')
    return stderr.strip()[-300:]


def deploy(vehicle: VirtualVehicle, step: Step, number: int, logs: Path) -> list[str]:
    """Run one step; the list of what went wrong (empty when it did what it should)."""
    manifest = VEHICLE / "manifests" / f"{step.manifest}.yaml"
    say(f"\n[{number}] Deploying {step.manifest}: {step.what}")
    say(f"$ mender-orchestrator install {manifest.relative_to(HERE.parent)}", 4)
    started = time.monotonic()
    result = vehicle.run("install", manifest)
    (logs / f"{step.manifest}.log").write_text(result.stderr)
    say(f"-> exit status {result.returncode} after {time.monotonic() - started:.1f} s: "
        f"{last_message(result.stderr)}", 4)
    provides = vehicle.run("show-provides").stdout
    status = vehicle.run("status").stdout
    say("$ mender-orchestrator show-provides", 4)
    output(provides)
    say("$ mender-orchestrator status", 4)
    output(status if step.every_state else status_summary(status))
    page = logs / f"{step.manifest}.html"
    report = vehicle.run("report", "-o", page)
    if step.every_state:
        say(f"$ mender-orchestrator report -o {page}", 4)
        say("one page to attach to a ticket: a timeline per Component, the plan, the versions "
            "before and after, what the Interfaces said (kept with --keep)", 6)

    problems = []
    if (result.returncode == 0) != step.succeeds:
        expectation = "succeed" if step.succeeds else "fail"
        problems.append(f"{step.manifest}: expected the deployment to {expectation}, "
                        f"exit status was {result.returncode}")
    versions = versions_in(provides)
    for component_type, version in sorted(step.versions.items()):
        if versions.get(component_type) != version:
            problems.append(f"{step.manifest}: {component_type} runs "
                            f"{versions.get(component_type)}, expected {version}")
    problems += [f"{step.manifest}: 'status' does not mention {text!r}"
                 for text in step.status_mentions if text not in status]
    if report.returncode != 0:
        problems.append(f"{step.manifest}: 'report' failed: {last_message(report.stderr)}")
    if problems:
        for problem in problems:
            say(f"[FAILED] {problem}", 4)
    else:
        outcome = "deployed" if step.succeeds else "failed and rolled back, as it should"
        say(f"[ok] {step.manifest} {outcome}; the vehicle runs:", 4)
        show_table(step.versions)
    return problems


def run(workdir: Path) -> list[str]:
    artifacts, root, logs = workdir / "artifacts", workdir / "vehicle", workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    say("[1] Building the Artifacts with mender-orchestrator's own writer")
    built = build(artifacts)
    say(f"{len(built)} Artifacts in {artifacts}:", 4)
    say(", ".join(path.name for path in built), 6)

    say("\n[2] Starting the virtual vehicle")
    problems: list[str] = []
    with VirtualVehicle(root, artifacts) as vehicle:
        say(f"CAN bus: python-can-remote server on 127.0.0.1:{vehicle.port}, brake ECU "
            f"simulator on it (UDS over ISO-TP); seat heater: STM32 bootloader simulator on "
            f"I2C; battery MCU: MCUboot simulator on SMP/UDP 127.0.0.1:{vehicle.smp_port}; "
            f"telematics: simulated modem in {vehicle.state / 'tcu'}; door lock: ESP32 ROM "
            f"loader simulator on {vehicle.state / 'ttyESP0'}", 4)
        say("Factory firmware, from show-provides:", 4)
        factory = vehicle.versions()
        show_table(factory)
        if factory != FACTORY:
            problems.append(f"the factory state is not {FACTORY}")
        for number, step in enumerate(STEPS, start=3):
            problems += deploy(vehicle, step, number, logs)
        say("\n$ mender-orchestrator history", 4)
        output(vehicle.run("history").stdout)
    say("\nSimulators stopped.")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path,
                        help="where to build and run, a new or empty directory "
                             "(default: a new temporary directory)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (Artifacts, devices, logs) afterwards")
    args = parser.parse_args()
    if args.workdir is not None:
        if args.workdir.exists() and (not args.workdir.is_dir() or any(args.workdir.iterdir())):
            parser.error(f"--workdir {args.workdir}: expected a new or empty directory "
                         f"(a previous run's devices would not be factory-fresh)")
        try:
            args.workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            parser.error(f"--workdir {args.workdir}: cannot create it: {exc.strerror or exc}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mender-orchestrator-demo-"))
    os.environ["COLUMNS"] = str(120 - OUTPUT_INDENT)  # the tools wrap their output to this
    say(f"Mender Orchestrator demo: the virtual vehicle (work directory {workdir})\n")
    say(INTRO + "\n")
    try:
        problems = run(workdir)
    except (VehicleError, OSError, subprocess.SubprocessError) as exc:
        # the simulators are stopped by then (VirtualVehicle is a context manager)
        problems = [f"the demo could not go on: {exc}"]
    except KeyboardInterrupt:
        say("\nInterrupted; the simulators were stopped.")
        return 130
    finally:
        if not (args.keep or args.workdir):
            shutil.rmtree(workdir, ignore_errors=True)
    if problems:
        say("\nThe demo did NOT go as it should:")
        for problem in problems:
            say(f"- {problem}", 2)
        if args.keep or args.workdir:
            say(f"Logs are in {workdir / 'logs'} and {workdir / 'vehicle' / 'logs'}.")
        return 1
    say("\nEvery step did what it should: vehicle-v1 and vehicle-v2 deployed, vehicle-v3 "
        "failed and the whole vehicle rolled back to vehicle-v2.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
