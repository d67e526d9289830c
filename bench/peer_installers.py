"""RAUC 1.8 and SWUpdate 2022.12 set up to install one payload into a file, for bench/peers.py.

Neither touches the machine's own configuration: every file either reads is in a scratch
directory, and what must sit at a fixed path is bind-mounted there inside a private mount
namespace (``unshare --mount --propagation private``, so nothing leaks to the host's mounts).

RAUC (Debian packages ``rauc`` and ``squashfs-tools`` for ``rauc bundle``)
  ``rauc install`` is only a D-Bus client: the install runs in ``rauc service``, which owns
  ``de.pengutronix.rauc`` on the *system* bus. A private ``dbus-daemon`` of type system,
  listening on a socket in the scratch directory and allowing everything, is that bus
  (``DBUS_SYSTEM_BUS_ADDRESS``); ``rauc-service``'s policy file is not needed. ``system.conf``:
  ``compatible``, ``bootloader=noop`` (no bootloader to switch), ``data-directory`` and
  ``mountprefix`` in the scratch directory, a ``[keyring]`` (a test CA made with openssl) and
  two ``type=raw`` slots A and B whose devices are plain files; ``--override-boot-slot=A``
  says A is running, so B (a file) is written. The bundle is a ``format=plain`` squashfs
  signed with a certificate from that CA; its signature check hashes the whole bundle, then
  the service loop-mounts the squashfs (root and loop devices needed) and copies the image.
  "none" is an uncompressed squashfs (``-noI -noD -noF -noX``), "gzip" mksquashfs' default.
  The service is not a child of ``rauc install``: its CPU time is read from /proc.

SWUpdate (Debian package ``swupdate``; ``cpio`` builds the .swu)
  ``swupdate -i FILE`` installs a local .swu without a daemon. The .swu is a ``cpio -H crc``
  archive: ``sw-description`` (libconfig), its CMS signature ``sw-description.sig`` (openssl
  ``cms -sign`` with the same CA's certificate; ``-k`` names the CA), then the image. Needed in
  ``sw-description``: ``hardware-compatibility`` (matched against ``-H board:revision``
  instead of /etc/hwrevision), the image's ``sha256``, ``type = "rawfile"`` with ``path`` the
  target file, and ``installed-directly = true`` (streamed from the archive to the handler,
  no copy in TMPDIR). ``-M -m``: no bootloader markers. It makes its IPC sockets in /tmp
  (``/tmp/sockinstctrl``, ``/tmp/swupdateprog``), so a scratch directory is bind-mounted
  over /tmp. "gzip" is the image through ``gzip -6`` with ``compressed = "zlib"``.
  About 1.0 s of every ``swupdate -i`` run is a wait, not work: a thread polls the install
  state with ``sleep(1)`` (strace: one 1-second ``clock_nanosleep`` before it exits), so a
  1 KiB .swu takes 1.02 s; its CPU time shows the work.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

COMPATIBLE = "bench-device"
HARDWARE = "bench-device:1.0"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

CERT_EXTENSIONS = """basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=emailProtection,codeSigning
"""

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

SYSTEM_CONF = """[system]
compatible={compatible}
bootloader=noop
data-directory={root}/data
mountprefix={root}/mnt

[keyring]
path={ca}

[slot.rootfs.0]
device={root}/slot-a.img
type=raw
bootname=A

[slot.rootfs.1]
device={target}
type=raw
bootname=B
"""

MANIFEST = """[update]
compatible={compatible}
version=1

[bundle]
format=plain

[image.rootfs]
filename=payload.img
"""

SW_DESCRIPTION = """software =
{{
	version = "1.0";
	hardware-compatibility = [ "1.0" ];
	files: (
		{{
			filename = "payload.img";
			type = "rawfile";
			path = "{target}";
			sha256 = "{sha256}";
			installed-directly = true;{compressed}
		}}
	);
}}
"""


def _run(argv: list[str], **kwargs: object) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=3600,
                          **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({done.returncode}):\n{done.stderr}{done.stdout}")


def problem() -> dict[str, str]:
    """Why RAUC or SWUpdate cannot run here, by name; an empty dict when both can."""
    problems = {}
    if os.geteuid() != 0:
        problems["RAUC"] = problems["SWUpdate"] = "needs root (mount namespace, loop devices)"
    needs = {"RAUC": ("rauc", "mksquashfs", "dbus-daemon", "dbus-send", "openssl", "unshare"),
             "SWUpdate": ("swupdate", "cpio", "openssl", "unshare")}
    for name, tools in needs.items():
        missing = [tool for tool in tools if shutil.which(tool) is None]
        if missing and name not in problems:
            problems[name] = f"{', '.join(missing)} not installed"
    return problems


def make_ca(root: Path) -> tuple[Path, Path, Path]:
    """A test CA and a signing certificate from it: (CA certificate, signer cert, signer key)."""
    root.mkdir(mode=0o700)
    ca, ca_key = root / "ca.pem", root / "ca.key"
    cert, key, request = root / "signer.pem", root / "signer.key", root / "signer.csr"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run(["openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca),
          "-days", "3650", "-subj", "/CN=bench CA",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    _run(["openssl", "req", *ec, "-keyout", str(key), "-out", str(request),
          "-subj", "/CN=bench signer"])
    extensions = root / "signer.ext"
    extensions.write_text(CERT_EXTENSIONS)
    _run(["openssl", "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
          "-CAcreateserial", "-out", str(cert), "-days", "3650", "-extfile", str(extensions)])
    return ca, cert, key


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


class Rauc:
    """A private system bus and ``rauc service`` for all bundles of one benchmark run."""

    def __init__(self, root: Path, ca: Path) -> None:
        self.root = root
        for directory in ("data", "mnt"):
            (root / directory).mkdir(parents=True)
        (root / "slot-a.img").touch()
        self.target = root / "slot-b.img"
        self.target.touch()
        socket = root / "bus"
        (root / "bus.conf").write_text(BUS_CONFIG.format(socket=socket))
        (root / "system.conf").write_text(
            SYSTEM_CONF.format(compatible=COMPATIBLE, root=root, ca=ca, target=self.target))
        self.env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={socket}"}
        self._bus = subprocess.Popen(["dbus-daemon", "--nofork", "--nopidfile",
                                      f"--config-file={root / 'bus.conf'}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._service: subprocess.Popen[bytes] | None = None
        try:
            self._wait_for(socket.exists, "the private D-Bus system bus")
            # unshare execs rauc in the same process: the pid is the service's
            self._service = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "rauc",
                 f"--conf={root / 'system.conf'}", "service", "--override-boot-slot=A"],
                env=self.env, stdout=subprocess.DEVNULL, stderr=(root / "service.log").open("wb"))
            self._wait_for(self._service_on_bus, "rauc service on the bus")
        except BaseException:
            self.close()
            raise

    def empty_slot(self) -> None:
        """A new, empty slot file before each install (see ``fresh_target`` in peers.py)."""
        self.target.unlink(missing_ok=True)
        self.target.touch()

    def _wait_for(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 10
        while not ready():
            if time.monotonic() > deadline:
                log = self.root / "service.log"
                raise SystemExit(f"{what} did not start:\n"
                                 f"{log.read_text() if log.exists() else ''}")
            time.sleep(0.05)

    def _service_on_bus(self) -> bool:
        if self._service is not None and self._service.poll() is not None:
            raise SystemExit(f"rauc service exited:\n{(self.root / 'service.log').read_text()}")
        done = subprocess.run(["dbus-send", "--system", "--print-reply",
                               "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
                               "org.freedesktop.DBus.NameHasOwner", "string:de.pengutronix.rauc"],
                              env=self.env, capture_output=True, text=True, timeout=10,
                              check=False)
        return done.stdout.rstrip().endswith("true")

    def bundle(self, payload: Path, compression: str, ca: Path, cert: Path, key: Path,
               out: Path) -> Path:
        content = out.with_suffix(".content")
        content.mkdir()
        os.link(payload, content / "payload.img")
        (content / "manifest.raucm").write_text(MANIFEST.format(compatible=COMPATIBLE))
        argv = ["rauc", "bundle", f"--cert={cert}", f"--key={key}", f"--keyring={ca}"]
        if compression == "none":
            argv.append("--mksquashfs-args=-noI -noD -noF -noX")
        _run([*argv, str(content), str(out)])
        shutil.rmtree(content)
        return out

    def argv(self, bundle: Path) -> list[str]:
        return ["rauc", "install", str(bundle)]

    def service_cpu(self) -> float:
        """CPU seconds of the service so far (it does the install, not the client)."""
        return _cpu_of(self._service.pid) if self._service else 0.0

    def close(self) -> None:
        for process in (self._service, self._bus):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


class Swupdate:
    """``swupdate -i`` of a signed .swu whose one image streams into a file."""

    def __init__(self, root: Path, ca: Path) -> None:
        self.root, self.ca = root, ca
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, mode=0o700)
        self.target = root / "installed.bin"

    def image(self, payload: Path, compression: str, cert: Path, key: Path, out: Path) -> Path:
        content = out.with_suffix(".content")
        content.mkdir()
        image = content / "payload.img"
        if compression == "gzip":
            with image.open("wb") as compressed:
                subprocess.run(["gzip", "-6", "-n", "-c", str(payload)], stdout=compressed,
                               check=True, timeout=3600)
        else:
            os.link(payload, image)
        sha256 = subprocess.run(["sha256sum", str(image)], capture_output=True, text=True,
                                check=True, timeout=3600).stdout.split()[0]
        compressed_line = '\n\t\t\tcompressed = "zlib";' if compression == "gzip" else ""
        (content / "sw-description").write_text(SW_DESCRIPTION.format(
            target=self.target, sha256=sha256, compressed=compressed_line))
        _run(["openssl", "cms", "-sign", "-in", "sw-description", "-out", "sw-description.sig",
              "-signer", str(cert), "-inkey", str(key), "-outform", "DER", "-nosmimecap",
              "-binary"], cwd=content)
        # sw-description first, its signature next: the order SWUpdate reads them in
        with out.open("wb") as archive:
            subprocess.run(["cpio", "-o", "-H", "crc", "--quiet"], cwd=content, stdout=archive,
                           input=b"sw-description\nsw-description.sig\npayload.img\n",
                           check=True, timeout=3600)
        shutil.rmtree(content)
        return out

    def argv(self, swu: Path) -> list[str]:
        inside = 'mount --bind "$1" /tmp && shift && exec swupdate "$@"'
        return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", inside,
                "swupdate", str(self.tmp), "-H", HARDWARE, "-k", str(self.ca), "-i", str(swu),
                "-M", "-m", "-l", "2"]
