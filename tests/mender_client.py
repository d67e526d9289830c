"""The real Mender client (Debian's ``mender-client`` 3.x) in standalone mode, kept in tmp.

Its configuration, data directory and device_type file are options; three paths are not:
Update Modules are looked up only in ``/usr/share/mender/modules/v3``, the artifact_info file
only at ``/etc/mender/artifact_info``, and ``/etc/mender/scripts`` for rootfs scripts. The
least invasive way to give it ours without touching the machine is a private mount
namespace: inside it (and only there, for that process and its children) a tmp directory is
bind-mounted over each of the two directories. As root ``unshare --mount`` is enough;
otherwise an unprivileged user namespace maps the caller to root inside.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MODULES_DIR = Path("/usr/share/mender/modules/v3")
CONF_DIR = Path("/etc/mender")

# runs inside the namespace: $1 modules, $2 /etc/mender replacement, then the client's argv
_IN_NAMESPACE = (
    'mount --bind "$1" /usr/share/mender/modules/v3 && mount --bind "$2" /etc/mender '
    '&& shift 2 && exec mender "$@"'
)


def namespace_prefix() -> list[str]:
    if os.geteuid() == 0:
        return ["unshare", "--mount", "--propagation", "private"]
    return ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]


def unavailable() -> str | None:
    """Why the real client cannot run here, or None."""
    if shutil.which("mender") is None:
        return "the Mender client 3.x ('mender', Debian package mender-client) is not installed"
    if shutil.which("unshare") is None or not (MODULES_DIR.is_dir() and CONF_DIR.is_dir()):
        return "needs unshare(1) and the client's /usr/share/mender/modules/v3 and /etc/mender"
    probe = subprocess.run(
        [*namespace_prefix(), "/bin/sh", "-c", 'mount --bind "$1" /etc/mender', "probe", "/tmp"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    if probe.returncode != 0:
        return f"cannot make a private mount namespace: {probe.stderr.strip()}"
    return None


@dataclass
class MenderClient:
    """One device's Mender client: its own config, data dir, modules and artifact_info."""

    root: Path
    env: Mapping[str, str]

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        device_type: str,
        modules: list[Path],
        env: Mapping[str, str],
        verify_key: Path | None = None,
        image_name: str = "factory-image",
    ) -> MenderClient:
        client = cls(root, env)
        client.modules.mkdir(parents=True)
        for module in modules:
            shutil.copy(module, client.modules / module.name)
        client.etc.mkdir()
        (client.etc / "artifact_info").write_text(f"artifact_name={image_name}\n")
        client.data.mkdir()
        (client.data / "device_type").write_text(f"device_type={device_type}\n")
        # a module-only device still needs the two partitions named (they are never touched)
        config: dict[str, object] = {"RootfsPartA": "/dev/rootfs-a", "RootfsPartB": "/dev/rootfs-b"}
        if verify_key is not None:
            config["ArtifactVerifyKey"] = str(verify_key)
        client.config.write_text(json.dumps(config))
        return client

    @property
    def modules(self) -> Path:
        return self.root / "modules"

    @property
    def etc(self) -> Path:
        return self.root / "etc-mender"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "mender.conf"

    def argv(self, *args: str | Path) -> list[str]:
        return [
            *namespace_prefix(), "/bin/sh", "-c", _IN_NAMESPACE, "mender-in-namespace",
            str(self.modules), str(self.etc),
            *self.options(), *map(str, args),
        ]

    def options(self, log_level: str = "info") -> list[str]:
        """The client's global options, as an Interface passes them (interface_args); at
        level info it relays what its Update Modules print on stderr."""
        return ["--config", str(self.config), "--fallback-config", str(self.root / "none.conf"),
                "--data", str(self.data), "--no-syslog", "--log-level", log_level]

    def run(self, *args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), env=dict(self.env), capture_output=True,
                              text=True, timeout=timeout, check=False)

    def provides(self) -> dict[str, str]:
        result = self.run("show-provides")
        assert result.returncode == 0, result.stderr
        return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)

    def artifact_name(self) -> str:
        result = self.run("show-artifact")
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def wrapper(self, path: Path) -> Path:
        """An executable that runs this client as ``mender`` would be run (for MENDER_CLIENT):
        the Interface adds the global options itself, from its interface_args."""
        prefix = " ".join(namespace_prefix())
        path.write_text(
            "#!/bin/sh\n"
            f"exec {prefix} /bin/sh -c '{_IN_NAMESPACE}' mender-in-namespace "
            f"'{self.modules}' '{self.etc}' \"$@\"\n"
        )
        path.chmod(0o755)
        return path
