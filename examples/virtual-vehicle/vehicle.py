"""The virtual vehicle on this computer: its directories, its simulators, its orchestrator.

``VirtualVehicle(root, artifacts)`` lays out everything under ``root`` the way a device lays
it out under /etc, /usr/share and /var/lib (reached through the MENDER_ORCHESTRATOR_*
variables), and ``start()`` brings up what the Components need:

- the telematics unit: a directory (``state/tcu``) its Interface treats as the modem;
- the brake ECU: a python-can-remote bus server on 127.0.0.1 (a free port) and the ECU
  simulator of the canbus driver as a second process on that bus;
- the seat heater: the I2C simulator's flash file (``state/seat-heater.bin``); the driver
  opens it in-process, so there is nothing to run;
- the battery MCU: the MCUboot simulator (``state/bms.json`` and its slot files) serving SMP
  on UDP 127.0.0.1 (a free port);
- the door lock: the ESP32 simulator of the esp32 driver, a process serving its ROM loader
  on a pty, linked as ``state/ttyESP0`` (its flash: ``state/door-lock.bin``).

``stop()`` ends the processes it started (their own process groups) and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

HERE = Path(__file__).resolve().parent
FACTORY = {
    "telematics_control_unit": "tcu-firmware-v2.3.0",
    "ecu_brake_controller": "brake-ecu-firmware-v1.7.0",
    "seat_heating": "seat-heating-fw-v1.1.0",
    "battery_mcu": "3.0.0",  # MCUboot reports the image's own version
    "door_lock": "door-lock-fw-v1.0.0",
}
VERSION_KEYS = {
    "telematics_control_unit": "rootfs-image.cellular-ota.version",
    "ecu_brake_controller": "rootfs-image.canbus.version",
    "seat_heating": "rootfs-image.i2c.version",
    "battery_mcu": "rootfs-image.mcuboot.version",
    "door_lock": "rootfs-image.esp32.version",
}
READY_SECONDS = 20.0


class VehicleError(RuntimeError):
    """The vehicle cannot be used: a simulator did not come up (the message says which and
    where its log is), or the orchestrator could not read its Components."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def versions_in(show_provides: str) -> dict[str, str]:
    """component_type -> version, from ``show-provides`` lines."""
    found = {}
    for line in show_provides.splitlines():
        key, _, value = line.partition("=")
        component_type = key.partition(".")[0]
        if key.endswith("." + VERSION_KEYS.get(component_type, "=")):
            found[component_type] = value
    return found


class VirtualVehicle:
    def __init__(self, root: Path, artifacts: Path, *, python: str = sys.executable) -> None:
        self.root = root
        self.artifacts = artifacts
        self.python = python
        self.state = root / "state"
        self.logs = root / "logs"
        self.conf_dir = root / "etc"
        self.data_dir = root / "usr-share"
        self.datastore = root / "var-lib"
        self.port = _free_port()
        self.smp_port = _free_port()
        self._processes: list[subprocess.Popen[bytes]] = []

    # ------------------------------------------------------------------ the orchestrator

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MENDER_ORCHESTRATOR_")}
        env.update(
            MENDER_ORCHESTRATOR_CONF_DIR=str(self.conf_dir),
            MENDER_ORCHESTRATOR_DATA_DIR=str(self.data_dir),
            MENDER_ORCHESTRATOR_DATASTORE_DIR=str(self.datastore),
        )
        return env

    def run(self, *args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``mender-orchestrator ARGS`` on this vehicle."""
        return subprocess.run(
            [self.python, "-m", "orchestrator_core", *map(str, args)], env=self.env,
            capture_output=True, text=True, timeout=timeout, check=False,
        )

    def versions(self) -> dict[str, str]:
        """component_type -> the version its Component reports (from show-provides)."""
        result = self.run("show-provides")
        if result.returncode != 0:
            raise VehicleError(f"show-provides failed:\n{result.stderr}")
        return versions_in(result.stdout)

    # ------------------------------------------------------------------ setting up

    def create(self) -> None:
        """The directories, config, Topology and factory-fresh devices."""
        for directory in (self.conf_dir, self.data_dir / "interfaces" / "v1", self.datastore,
                          self.state, self.logs):
            directory.mkdir(parents=True, exist_ok=True)
        for directory in (self.datastore, self.state):
            directory.chmod(0o700)
        interface = self.data_dir / "interfaces" / "v1" / "cellular-ota"
        shutil.copy(HERE / "interfaces" / "cellular-ota", interface)
        interface.chmod(0o755)
        no_reboot = self.root / "no-reboot"
        no_reboot.write_text("#!/bin/sh\necho 'the virtual vehicle never reboots this "
                             "computer' >&2\nexit 1\n")
        no_reboot.chmod(0o755)
        (self.conf_dir / "mender-orchestrator.conf").write_text(json.dumps({
            "ArtifactSources": [{"Type": "directory", "Path": str(self.artifacts)}],
            "RebootCommand": [str(no_reboot)],
            "InterfaceTimeoutSeconds": 120,
        }, indent=2))
        topology = string.Template((HERE / "topology.yaml").read_text()).substitute(
            VEHICLE_STATE=self.state, CAN_CHANNEL=f"127.0.0.1:{self.port}",
            SMP_PORT=self.smp_port)
        (self.datastore / "topology.yaml").write_text(topology)
        self._factory_modem()
        self._factory_seat_heater()
        self._factory_battery_mcu()
        self._factory_door_lock()

    def _factory_modem(self) -> None:
        modem = self.state / "tcu"
        (modem / "slot-a").mkdir(parents=True)
        (modem / "imei").write_text("356938035643809\n")
        (modem / "slot-a" / "firmware.bin").write_text("TCU-FIRMWARE\nselftest: pass\n")
        (modem / "slot-a" / "version").write_text(FACTORY["telematics_control_unit"] + "\n")
        for name, value in (("permanent", "a"), ("running", "a"), ("health", "ok")):
            (modem / name).write_text(value + "\n")

    def _factory_seat_heater(self) -> None:
        sys.path.insert(0, str(HERE))
        from build_artifacts import seat_heater

        image = self.state / "seat-heater-factory.bin"
        image.write_bytes(seat_heater("1.1.0").image)
        self._simulator_command(
            "mender_orchestrator_i2c.simulator", "init", str(self.state / "seat-heater.bin"),
            "--flash-size=64K", "--uid=5EA7000000000000000000A1", f"--image={image}",
            f"--version={FACTORY['seat_heating']}",
        )

    def _factory_battery_mcu(self) -> None:
        from build_artifacts import BMS_SIGNING_KEY, battery_mcu_firmware

        image = self.state / "bms-factory.bin"
        image.write_bytes(battery_mcu_firmware(FACTORY["battery_mcu"]).image)
        key = self.state / "bms-signing.key"
        key.write_text(BMS_SIGNING_KEY.private_bytes_raw().hex() + "\n")
        self._simulator_command(
            "mender_orchestrator_mcuboot.simulator", "init", str(self.state / "bms.json"),
            f"--key={key}", f"--image={image}", "--node-name=bms-7c2a91",
        )

    def _factory_door_lock(self) -> None:
        from build_artifacts import door_lock

        image = self.state / "door-lock-factory.bin"
        image.write_bytes(door_lock(FACTORY["door_lock"].removeprefix("door-lock-fw-v")).image)
        self._simulator_command(
            "mender_orchestrator_esp32.simulator", "init", str(self.state / "door-lock.bin"),
            "--mac=240ac4d00701", f"--image={image}",
        )

    def _simulator_command(self, module: str, *args: str) -> None:
        result = subprocess.run([self.python, "-m", module, *args], capture_output=True,
                                text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise VehicleError(f"{module} {' '.join(args)} failed:\n{result.stderr}")

    # ------------------------------------------------------------------ processes

    def start(self) -> None:
        """The CAN bus server, the brake ECU on it, the battery MCU, the door lock's ESP32;
        returns once all are up."""
        server_log = self.logs / "can-bus-server.log"
        self._spawn(server_log, "can_remote", "--interface", "virtual", "--channel",
                    "vehicle-can", "--host", "127.0.0.1", "--port", str(self.port))
        self._wait_for(server_log, "Server listening", "the CAN bus server (python-can-remote)")
        ecu_log = self.logs / "brake-ecu.log"
        self._spawn(
            ecu_log, "mender_orchestrator_canbus.simulator",
            "--interface", "remote", "--channel", f"127.0.0.1:{self.port}",
            "--state", str(self.state / "brake-ecu.json"), "--bank-size", "65536",
            "--serial", "SIM-BRAKE-0042", "--initial-version", FACTORY["ecu_brake_controller"],
            "--initial-size", "8192",
        )
        # "ready" comes once the ECU answers, later than its connection to the bus server
        self._wait_for(ecu_log, " ready: ", "the brake ECU simulator")
        bms_log = self.logs / "battery-mcu.log"
        self._spawn(bms_log, "mender_orchestrator_mcuboot.simulator", "serve",
                    str(self.state / "bms.json"), "--udp-port", str(self.smp_port))
        self._wait_for(bms_log, "\nready\n", "the battery MCU simulator (MCUboot, SMP)")
        door_log = self.logs / "door-lock.log"
        self._spawn(door_log, "mender_orchestrator_esp32.simulator", "serve",
                    str(self.state / "door-lock.bin"), "--link", str(self.state / "ttyESP0"))
        self._wait_for(door_log, "ready: ", "the door lock's ESP32 simulator")

    def _spawn(self, log: Path, module: str, *args: str) -> None:
        with log.open("ab") as output:
            process = subprocess.Popen(
                [self.python, "-m", module, *args], stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._processes.append(process)

    def _wait_for(self, log: Path, text: str, what: str) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if text in log.read_text(errors="replace"):
                return
            for process in self._processes:
                if process.poll() is not None:
                    raise VehicleError(f"{what} exited with status {process.returncode}; "
                                         f"see {log}")
            time.sleep(0.05)
        raise VehicleError(f"{what} did not come up within {READY_SECONDS:g} s; see {log}")

    def stop(self) -> None:
        """End the processes this vehicle started: TERM, then KILL after 5 s."""
        for process in reversed(self._processes):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self._processes):
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._processes.clear()

    def __enter__(self) -> VirtualVehicle:
        self.create()
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

