"""What the fixtures of ``orchestrator_core.testing`` do: build Artifacts, deploy one Component
through the real CLI in a private System, call single hooks, run the conformance checks.

Imported only when a fixture is used, so that pytest runs which do not use the kit stay cheap.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from orchestrator_core.config import Config, load_config
from orchestrator_core.context import Component

ENV_PREFIX = "MENDER_ORCHESTRATOR_"
# the engine announces every state it runs for a group of Components at info level
# (and "system reboot needed for ...", which is no call of an Interface)
_ANNOUNCED = re.compile(r"order group \d+: (?P<state>[A-Za-z]+) for (?P<members>.+)$")
# one line of `show-provides`: <component_type>.<id>.<key>=<value>
_PROVIDE = re.compile(r"^(?P<type>[^.]+)\.(?P<id>[^.]+)\.(?P<key>[^=]+)=(?P<value>.*)$")
DEPLOY_TIMEOUT = 600.0  # seconds for one CLI command before the test gives up on it
# a test must never reboot the machine it runs on: NeedsArtifactReboot Automatic fails instead
NO_REBOOT = ["false"]


def version_key(payload_type: str) -> str:
    return f"rootfs-image.{payload_type}.version"


@dataclass(frozen=True)
class Artifact:
    """A module-image Artifact built by ``artifact_factory``."""

    path: Path
    name: str
    version: str
    payload_type: str
    component_type: str


class ArtifactFactory:
    """``artifact_factory(version, payload_type=..., component_type=...)``: a .mender file whose
    payload is ``files`` (name -> bytes), providing ``rootfs-image.<payload_type>.version``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __call__(self, version: str, *, payload_type: str, component_type: str,
                 files: Mapping[str, bytes] | None = None, name: str | None = None) -> Artifact:
        from orchestrator_core.artifact.writer import ArtifactSpec, write_artifact

        name = name or f"{payload_type}-{version}"
        built = self.directory / name
        payload_dir = built / "payload"
        payload_dir.mkdir(parents=True, exist_ok=False)
        paths = []
        for file_name, data in (files or {"firmware.bin": f"{name}\n".encode()}).items():
            path = payload_dir / file_name
            path.write_bytes(data)
            paths.append(path)
        spec = ArtifactSpec(
            artifact_name=name,
            payload_type=payload_type,
            device_types=(component_type,),
            files=tuple(paths),
            provides={version_key(payload_type): version},
            clears_provides=(f"rootfs-image.{payload_type}.*",),
        )
        path = built / f"{name}.mender"
        write_artifact(spec, path)
        return Artifact(path, name, version, payload_type, component_type)


# --------------------------------------------------------------------------- a private System


class Sandbox:
    """The configuration, data and datastore directories of one private System."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf_dir = root / "etc"
        self.data_dir = root / "usr-share"
        self.datastore = root / "var-lib"
        for directory in (self.conf_dir, self.data_dir / "interfaces" / "v1", self.datastore):
            directory.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env.update({
            f"{ENV_PREFIX}CONF_DIR": str(self.conf_dir),
            f"{ENV_PREFIX}DATA_DIR": str(self.data_dir),
            f"{ENV_PREFIX}DATASTORE_DIR": str(self.datastore),
        })
        return env

    def config(self, timeout_seconds: float | None = None) -> Config:
        config = load_config(self.env)
        if timeout_seconds is not None:
            config = config._replace(interface_timeout_seconds=timeout_seconds)
        return config

    def add_executable(self, name: str, source: Path) -> None:
        """An executable Interface: it wins over a driver of the same name, as on a device."""
        target = self.data_dir / "interfaces" / "v1" / name
        shutil.copy(source, target)
        target.chmod(0o755)

    def cli(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator_core", *(str(a) for a in args)],
            env=self.env, cwd=self.root, capture_output=True, text=True,
            timeout=DEPLOY_TIMEOUT, check=False,
        )


@dataclass(frozen=True)
class Deployed:
    """What ``deploy`` saw: the CLI's exit code and output, the states the engine announced
    for the Component (in order), and its version before and after."""

    exit_code: int
    stdout: str
    stderr: str
    calls: list[str]
    version_before: str | None
    version_after: str | None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _yaml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Deployer:
    """``deploy(artifact, interface=..., args=[...])``: one Component, one Artifact, through
    ``mender-orchestrator install`` in a new private System each time."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    def __call__(self, artifact: Artifact, *, interface: str | None = None,
                 args: Sequence[str] = (), executable: Path | None = None,
                 config: Mapping[str, Any] | None = None) -> Deployed:
        import json

        self.count += 1
        system = Sandbox(self.directory / f"system-{self.count}")
        interface = interface or artifact.payload_type
        if executable is not None:
            system.add_executable(interface, executable)
        options = {"RebootCommand": NO_REBOOT, **(config or {})}
        (system.conf_dir / "mender-orchestrator.conf").write_text(json.dumps(options))
        quoted = ", ".join(_yaml_string(a) for a in args)
        (system.datastore / "topology.yaml").write_text(
            'api_version: "mender/v1"\nkind: "topology"\nsystem_type: "test-system"\n'
            f"components:\n  - component_type: {_yaml_string(artifact.component_type)}\n"
            f"    interface: {_yaml_string(interface)}\n    interface_args: [{quoted}]\n"
        )
        manifest = system.root / "manifest.yaml"
        manifest.write_text(
            f'api_version: "mender/v1"\nkind: "manifest"\nname: {_yaml_string(artifact.name)}\n'
            'system_types_compatible: ["test-system"]\ncomponent_types:\n'
            f"  {_yaml_string(artifact.component_type)}:\n"
            f"    artifact_name: {_yaml_string(artifact.name)}\n"
            f"    artifact_path: {_yaml_string(str(artifact.path))}\n"
            "    update_strategy: {order: 10}\n"
        )
        key = version_key(artifact.payload_type)
        before = self._version(system, artifact.component_type, key)
        result = system.cli("--log-level", "info", "install", manifest)
        after = self._version(system, artifact.component_type, key)
        return Deployed(result.returncode, result.stdout, result.stderr,
                        self._calls(result.stderr, artifact.component_type), before, after)

    @staticmethod
    def _version(system: Sandbox, component_type: str, key: str) -> str | None:
        shown = system.cli("show-provides")
        for line in shown.stdout.splitlines():
            found = _PROVIDE.match(line)
            if found and found["type"] == component_type and found["key"] == key:
                return found["value"]
        return None

    @staticmethod
    def _calls(log_text: str, component_type: str) -> list[str]:
        calls = []
        for line in log_text.splitlines():
            found = _ANNOUNCED.search(line)
            if found and any(m.strip().startswith(f"{component_type}/")
                             for m in found["members"].split(",")):
                calls.append(found["state"])
        return calls


# --------------------------------------------------------------------------- single hooks


class Hooks:
    """One Component's driver, called hook by hook as the engine does: a newly loaded driver
    for every call (the orchestrator may restart between states), a real ``InterfaceContext``,
    the File API directory prepared for the Artifact, and the real payload during Download."""

    def __init__(self, directory: Path, interface: str, args: Sequence[str],
                 component_type: str, timeout_seconds: float,
                 executable: Path | None = None) -> None:
        self.system = Sandbox(directory)
        if executable is not None:
            self.system.add_executable(interface, executable)
        self.component = Component(component_type, interface, tuple(args))
        self.timeout_seconds = timeout_seconds
        self.work_dir = self.system.root / "work"
        self.prepared_for: Artifact | None = None
        self.component_id: str | None = None

    def _driver(self) -> Any:
        from orchestrator_core import drivers

        return drivers.load(self.component, self.system.data_dir)

    def _context(self, driver: Any, artifact: Artifact | None, timeout: float | None) -> Any:
        info = None
        if artifact is not None:
            self._prepare(driver, artifact)
            info = self._header(artifact).to_info()
        return driver.context(
            log=logging.getLogger("mender_orchestrator.component"),
            timeout_seconds=self.timeout_seconds if timeout is None else timeout,
            component_id=self.component_id,
            work_dir=self.work_dir if artifact is not None else None,
            artifact=info,
        )

    def query(self, name: str) -> Any:
        """``identity``, ``provides``, ``inventory``, ``supports_rollback``,
        ``needs_artifact_reboot``...: the answer after the protocol's checks."""
        driver = self._driver()
        answer = getattr(driver, name)(self._context(driver, None, None))
        if name == "identity":
            self.component_id = answer
        return answer

    def version(self) -> str | None:
        provides: dict[str, str] = self.query("provides")
        key = version_key(self.component.interface)
        return provides.get(key, provides.get("rootfs-image.version"))

    def state(self, name: str, artifact: Artifact, *, timeout_seconds: float | None = None
              ) -> None:
        """Run one state (``download``, ``artifact_install``...) for ``artifact``; a failed
        state raises the ``OrchestratorError`` the engine would see."""
        if self.component_id is None:
            self.query("identity")
        driver = self._driver()
        ctx = self._context(driver, artifact, timeout_seconds)
        if name != "download":
            driver.run_state(name, ctx)
            return
        from orchestrator_core import filetree
        from orchestrator_core.artifact import open_payload

        header = self._header(artifact)
        with open_payload(header.name, str(artifact.path), header.manifest_digest,
                          self._unsigned()) as feed:
            ctx.payload = feed
            driver.run_state("download", ctx)
            if not feed.consumed:  # the engine stores what the driver left unread
                feed.save_to(filetree.files_dir(self.work_dir))

    def _unsigned(self) -> Config:
        return self.system.config()._replace(artifact_verify_keys=())

    def _header(self, artifact: Artifact) -> Any:
        from orchestrator_core.artifact import read_header

        with artifact.path.open("rb") as stream:
            return read_header(stream, source_name=str(artifact.path), verify_keys=())

    def _prepare(self, driver: Any, artifact: Artifact) -> None:
        if self.prepared_for == artifact:
            return
        from orchestrator_core import filetree

        header = self._header(artifact)
        if self.work_dir.exists():
            shutil.rmtree(self.work_dir)
        filetree.prepare(
            self.work_dir,
            component_type=self.component.component_type,
            provides=driver.provides(self._context(driver, None, None)),
            artifact_name=header.name,
            artifact_group=header.group,
            payload_type=header.payload_type,
            header_info=header.header_info_bytes,
            type_info=header.type_info_bytes,
            meta_data=header.meta_data_bytes,
        )
        self.prepared_for = artifact


class HooksFactory(Protocol):
    """The ``interface_hooks`` fixture."""

    def __call__(self, interface: str, args: Sequence[str], component_type: str,
                 timeout_seconds: float = 30.0, executable: Path | None = None) -> Hooks: ...


# --------------------------------------------------------------------------- conformance


def conformance(directory: Path, interface: str, component_type: str, args: Sequence[str],
                executable: Path | None = None, timeout_seconds: float | None = None,
                artifacts: Sequence[Path] = ()) -> Any:
    """The ``check-interface`` report for one Component in a private System; ``artifacts``
    as its ``--artifact`` options (the new version, then optionally the running one)."""
    from orchestrator_core import drivers
    from orchestrator_core.conformance.checks import Report, run
    from orchestrator_core.conformance.command import artifact_maker
    from orchestrator_core.conformance.probe import Probe

    system = Sandbox(directory)
    if executable is not None:
        system.add_executable(interface, executable)
    config = system.config(timeout_seconds)
    driver = drivers.load(Component(component_type, interface, tuple(args)), system.data_dir)
    report = Report(interface, driver.resolution.kind, driver.resolution.target, component_type)
    payload_type = getattr(driver.pm.get_plugin("driver"), "interface_name", interface)
    scratch = system.root / "scratch"
    scratch.mkdir(mode=0o700)
    maker = artifact_maker(tuple(Path(a) for a in artifacts), config, payload_type,
                           component_type, scratch / "artifacts")
    return run(Probe(driver, config.interface_timeout_seconds), report, maker, scratch,
               dry=False, leave_installed=False)
