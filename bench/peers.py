"""Ours against the Go tools on the same files, in alternating rounds: median ratios ours/Go.

Jobs, for two payloads of SIZE MiB (random bytes; firmware-like machine code, payloads.py)
and the compressions none, gzip and lzma (xz), every Artifact signed with an ECDSA P-256 key:
  verify   mender-orchestrator artifact inspect --verify-key   vs  mender-artifact validate -k
           (both on the same Artifact, written by mender-artifact)
  write    mender-orchestrator artifact write -k               vs  mender-artifact write
           module-image -k (same arguments)
  install  (none and gzip) the same signed Artifact streamed into a file by a streaming
           Update Module / Interface (the same shell script): Debian's ``mender`` 3.4
           standalone (``mender install``, in a private mount namespace so its modules and
           /etc/mender are ours, a fresh data directory per run) against our Artifact reader
           and ``exec`` driver (header and signature checked, ``Download`` streamed to the
           Interface) in a process of its own. The engine around it (journal, plan, the other
           states) is not in ours: bench/deployment_overhead.py measures that.
lzma runs at --lzma-size-mib (default 32): both tools compress xz on one core at a few
MiB/s, a 256 MiB round would take minutes.

Every run is a process of its own, timed by wall clock and by the CPU time of its process
tree (steadier than wall clock on a shared machine; a tool that uses two cores at once
shows it in wall clock only); each input is read again (cat to
/dev/null) right before it is timed, as this kernel evicts cold page cache within minutes; in
odd rounds ours goes first, in even rounds the Go tool. Before the rounds it waits until the
1-minute load average is under --max-load (at most --max-wait seconds) and reports the load
averages it ran under. RAUC and SWUpdate are left out (README "Benchmarks").

Run: .venv/bin/python bench/peers.py [--size-mib 256] [--rounds 3] [--jobs verify write install]
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from payloads import write_firmware_like, write_random

BIN = Path(sys.executable).parent
OURS = str(BIN / "mender-orchestrator")
GO = "mender-artifact"
COMPRESSIONS = ("none", "gzip", "lzma")
DEVICE = "bench-device"
MODULE = "bench-file"
# the Update Module and the Interface: every stream of Download written to TARGET
STREAM_TO_FILE = """#!/bin/sh
case "$1" in
  Download)
    cd "$2" || exit 1
    while read -r stream <stream-next && [ -n "$stream" ]; do cat "$stream" > "TARGET"; done ;;
esac
"""


@dataclass
class Job:
    name: str
    inputs: list[Path]  # read again right before each timing
    ours: list[str]
    go: list[str]
    go_setup: Callable[[], None] = lambda: None
    samples: list[tuple[float, float]] = field(default_factory=list)  # wall: ours, Go
    cpu: list[tuple[float, float]] = field(default_factory=list)  # CPU: ours, Go


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(
    argv: list[str], inputs: list[Path], setup: Callable[[], None]
) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system, of the whole process tree) of one run."""
    setup()
    for path in inputs:
        subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
    cpu = cpu_of_children()
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed ({done.returncode}):\n{done.stderr}{done.stdout}")
    return elapsed, cpu_of_children() - cpu


def wait_for_quiet(max_load: float, max_wait: float) -> None:
    deadline = time.monotonic() + max_wait
    while os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        time.sleep(5)
    load = os.getloadavg()[0]
    if load >= max_load:
        print(f"load average still {load:.2f} after {max_wait:.0f} s: measuring anyway")


def make_key(root: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = root / "key.pem", root / "key.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.TraditionalOpenSSL,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def write_arguments(payload: Path, compression: str, key: Path, output: Path) -> list[str]:
    return ["-T", MODULE, "-t", DEVICE, "-n", "bench-v1", "-f", str(payload),
            "--compression", compression, "-k", str(key), "-o", str(output)]


# ------------------------------------------------------------------ install: ours and Go's


def install_ours(artifact: Path, public: Path, data_dir: Path, work: Path) -> None:
    """In a process of its own: header and signature checked, Download streamed."""
    from orchestrator_core import drivers
    from orchestrator_core.artifact import ArtifactPayload, read_header
    from orchestrator_core.context import Component

    with artifact.open("rb") as source:
        digest = read_header(source, source_name=str(artifact), verify_keys=[public])
    driver = drivers.load(Component(DEVICE, MODULE), data_dir)
    with artifact.open("rb") as source:
        feed = ArtifactPayload(source, source_name=str(artifact),
                               manifest_digest=digest.manifest_digest, verify_keys=[public])
        ctx = driver.context(log=logging.getLogger("bench"), timeout_seconds=3600,
                             work_dir=work, payload=feed)
        driver.run_state("download", ctx)


class GoClient:
    """Debian's mender 3.4, standalone, with our module dir and /etc/mender bind-mounted."""

    def __init__(self, root: Path, module: Path, public: Path) -> None:
        self.root = root
        self.modules, self.etc, self.data = root / "modules", root / "etc", root / "data"
        self.modules.mkdir(parents=True)
        shutil.copy(module, self.modules / MODULE)
        self.etc.mkdir()
        (self.etc / "artifact_info").write_text("artifact_name=factory\n")
        self.config = root / "mender.conf"
        self.config.write_text(
            f'{{"RootfsPartA": "/dev/a", "RootfsPartB": "/dev/b", "ArtifactVerifyKey": '
            f'"{public}"}}'
        )

    def fresh(self) -> None:
        """A new data directory: the last install left its commit pending."""
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir()
        (self.data / "device_type").write_text(f"device_type={DEVICE}\n")

    def argv(self, artifact: Path) -> list[str]:
        inside = ('mount --bind "$1" /usr/share/mender/modules/v3 && '
                  'mount --bind "$2" /etc/mender && shift 2 && exec mender "$@"')
        return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", inside,
                "mender", str(self.modules), str(self.etc), "--config", str(self.config),
                "--fallback-config", str(self.root / "none.conf"), "--data", str(self.data),
                "--no-syslog", "--log-level", "error", "install", str(artifact)]


def go_client_problem() -> str | None:
    if shutil.which("mender") is None:
        return "the Mender client ('mender', Debian package mender-client) is not installed"
    if os.geteuid() != 0:
        return "mender install in a private mount namespace needs root here"
    return None


# ------------------------------------------------------------------ the rounds


def jobs_for(args: argparse.Namespace, root: Path, key: tuple[Path, Path]) -> list[Job]:
    private, public = key
    jobs: list[Job] = []
    payloads: dict[tuple[str, int], Path] = {}
    for kind, make in (("random", write_random), ("firmware", write_firmware_like)):
        for size_mib in {args.size_mib, args.lzma_size_mib}:
            path = root / f"{kind}-{size_mib}.bin"
            make(path, size_mib << 20)
            payloads[kind, size_mib] = path
    install = "install" in args.jobs
    client_problem = go_client_problem() if install else None
    if client_problem:
        print(f"install left out: {client_problem}")
    data_dir, target = root / "ours-data", root / "installed.bin"
    module = root / MODULE
    module.write_text(STREAM_TO_FILE.replace("TARGET", str(target)))
    module.chmod(0o755)
    (data_dir / "interfaces" / "v1").mkdir(parents=True)
    shutil.copy(module, data_dir / "interfaces" / "v1" / MODULE)
    work = root / "work"
    work.mkdir(mode=0o700)
    for kind in ("random", "firmware"):
        for compression in args.compression:
            size_mib = args.lzma_size_mib if compression == "lzma" else args.size_mib
            payload = payloads[kind, size_mib]
            label = f"{kind} {size_mib} MiB, {compression}"
            artifact = root / f"{kind}-{compression}.mender"
            subprocess.run([GO, "write", "module-image",
                            *write_arguments(payload, compression, private, artifact)],
                           check=True, capture_output=True)
            if "verify" in args.jobs:
                jobs.append(Job(f"verify  {label}", [artifact],
                                [OURS, "artifact", "inspect", "--verify-key", str(public),
                                 str(artifact)],
                                [GO, "validate", "-k", str(public), str(artifact)]))
            if "write" in args.jobs:
                ours_out, go_out = root / "ours-out.mender", root / "go-out.mender"
                jobs.append(Job(f"write   {label}", [payload],
                                [OURS, "artifact", "write",
                                 *write_arguments(payload, compression, private, ours_out)],
                                [GO, "write", "module-image",
                                 *write_arguments(payload, compression, private, go_out)]))
            if install and not client_problem and compression != "lzma":
                client = GoClient(root / f"client-{kind}-{compression}", module, public)
                jobs.append(Job(f"install {label}", [artifact],
                                [sys.executable, __file__, "--install-child", str(artifact),
                                 str(public), str(data_dir), str(work)],
                                client.argv(artifact), go_setup=client.fresh))
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--lzma-size-mib", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", nargs="+", default=["verify", "write", "install"],
                        choices=["verify", "write", "install"])
    parser.add_argument("--compression", nargs="+", default=list(COMPRESSIONS),
                        choices=COMPRESSIONS)
    parser.add_argument("--max-load", type=float, default=0.6)
    parser.add_argument("--max-wait", type=float, default=120)
    parser.add_argument("--dir", default="/var/tmp", help="where the scratch files go")
    parser.add_argument("--install-child", nargs=4, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.install_child:
        install_ours(*args.install_child)
        return
    if shutil.which(GO) is None:
        raise SystemExit("needs Debian's mender-artifact (apt-get install mender-artifact)")
    with tempfile.TemporaryDirectory(prefix="peers-", dir=args.dir) as directory:
        root = Path(directory)
        jobs = jobs_for(args, root, make_key(root))
        wait_for_quiet(args.max_load, args.max_wait)
        loads = [os.getloadavg()[0]]
        for round_number in range(args.rounds):
            for job in jobs:
                ours_first = round_number % 2 == 0
                timings = {}
                for who in ("ours", "go") if ours_first else ("go", "ours"):
                    argv = job.ours if who == "ours" else job.go
                    setup = job.go_setup if who == "go" else (lambda: None)
                    timings[who] = run_timed(argv, job.inputs, setup)
                job.samples.append((timings["ours"][0], timings["go"][0]))
                job.cpu.append((timings["ours"][1], timings["go"][1]))
            loads.append(os.getloadavg()[0])
    print(f"{args.rounds} rounds; 1-minute load average {min(loads):.2f} to {max(loads):.2f} "
          f"(at the start and after each round); {os.cpu_count()} CPUs")
    print("medians; each ratio is the median of the per-round ratios; CPU: user + system of "
          "the process tree")
    print(f"{'job':<36} {'ours (s)':>9} {'Go (s)':>8} {'ours/Go':>8} {'CPU ours':>9} "
          f"{'CPU Go':>7} {'ours/Go':>8}")
    for job in jobs:
        columns = []
        for samples in (job.samples, job.cpu):
            columns += [statistics.median(s[0] for s in samples),
                        statistics.median(s[1] for s in samples),
                        statistics.median(s[0] / s[1] for s in samples)]
        print(f"{job.name:<36} {columns[0]:>9.3f} {columns[1]:>8.3f} {columns[2]:>8.2f} "
              f"{columns[3]:>9.3f} {columns[4]:>7.3f} {columns[5]:>8.2f}")


if __name__ == "__main__":
    main()
