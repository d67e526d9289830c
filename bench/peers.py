"""Ours against the Go tools, RAUC and SWUpdate on the same payloads, in rotating rounds:
median ratios ours/theirs.

Jobs, for two payloads of SIZE MiB (default 1024, the size the performance targets are set
at; random bytes; firmware-like machine code, payloads.py)
and the compressions none, gzip and lzma (xz), every Artifact signed with an ECDSA P-256 key:
  verify   mender-orchestrator artifact inspect --verify-key   vs  mender-artifact validate -k
           (both on the same Artifact, written by mender-artifact)
  write    mender-orchestrator artifact write -k               vs  mender-artifact write
           module-image -k (same arguments)
  install  (none, gzip, zstd) the same signed Artifact streamed into a file by a streaming
           Update Module / Interface (the same shell script): Debian's ``mender`` 3.4
           standalone (``mender install``, in a private mount namespace so its modules and
           /etc/mender are ours, a fresh data directory per run) against our Artifact reader
           and ``exec`` driver (header and signature checked, ``Download`` streamed to the
           Interface) in a process of its own (install_child.py). The engine around it
           (journal, plan, the other states) is not in ours: bench/deployment_overhead.py
           measures that.
           Beside them, the same payload installed into a file by RAUC 1.8 (a signed plain
           bundle into a raw slot, through ``rauc service`` on a private system bus) and by
           SWUpdate 2022.12 (``swupdate -i`` of a CMS-signed .swu, the image streamed to the
           ``rawfile`` handler); none: an uncompressed squashfs / image, gzip: mksquashfs'
           gzip / ``compressed = "zlib"``. Their minimal configuration, and what each needs
           installed, is in peer_installers.py; each is left out, with the reason printed,
           where it cannot run (--no-others leaves both out).
zstd is ours alone (mender-artifact 3.9 neither writes nor reads it; RAUC and SWUpdate are
left out of it too): its Artifact is written by ours, and its rows have no ratio.
lzma writes run at --lzma-size-mib (default 32): the Go tool compresses xz on one core at
about 2 MiB/s, a 1 GiB round would take minutes. lzma verifies run at --size-mib, like the
other rows, on an Artifact written by ours (the Go tool reads it: tests/test_writer.py); at
32 MiB a verify is mostly start-up (ours about 60 ms, the Go tool's 15).

Every run is a process of its own, timed by wall clock and by the CPU time of its process
tree (steadier than wall clock on a shared machine; a tool that uses two cores at once
shows it in wall clock only); each input is read again (cat to
/dev/null) right before it is timed, as this kernel evicts cold page cache within minutes; the
order of the contenders rotates every round; each install writes a target that does not exist
yet (the last one is removed first); the disk is synced before each timing.
Before the rounds it waits until the
1-minute load average is under --max-load (at most --max-wait seconds) and reports the load
averages it ran under. RAUC's install runs
in its service, not in the ``rauc install`` client: its CPU time is read from /proc.

A smaller --size-mib runs quicker but weighs the fixed cost more: Python's start-up and our
imports (about 50 ms for a verify, against 10 to 15 for the Go tool) are a fifth of a 256 MiB
verify, where hashing takes as long for both.

Run: .venv/bin/python bench/peers.py [--size-mib 1024] [--rounds 3] [--jobs verify write install]
(RAUC and SWUpdate: apt-get install rauc squashfs-tools swupdate cpio)
"""

from __future__ import annotations

import argparse
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
from functools import partial
from pathlib import Path

import peer_installers
from install_child import DEVICE, MODULE
from payloads import write_firmware_like, write_random
from peer_installers import Rauc, Swupdate

BIN = Path(sys.executable).parent
INSTALL_CHILD = Path(__file__).with_name("install_child.py")
OURS = str(BIN / "mender-orchestrator")
GO = "mender-artifact"
COMPRESSIONS = ("none", "gzip", "lzma", "zstd")
GO_COMPRESSIONS = ("none", "gzip", "lzma")  # mender-artifact 3.9 neither writes nor reads zstd
# the Update Module and the Interface: every stream of Download written to TARGET
STREAM_TO_FILE = """#!/bin/sh
case "$1" in
  Download)
    cd "$2" || exit 1
    while read -r stream <stream-next && [ -n "$stream" ]; do cat "$stream" > "TARGET"; done ;;
esac
"""


@dataclass
class Contender:
    argv: list[str]
    inputs: list[Path]  # read again right before each timing
    setup: Callable[[], None] = lambda: None
    # CPU seconds so far of a process that does the work but is no child (rauc service)
    outside_cpu: Callable[[], float] = lambda: 0.0
    env: dict[str, str] | None = None
    samples: list[tuple[float, float]] = field(default_factory=list)  # wall, CPU


@dataclass
class Job:
    name: str
    contenders: dict[str, Contender]  # "ours" first, then Go, RAUC, SWUpdate where they run


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fresh_target(target: Path) -> None:
    """Every install writes a target that does not exist yet. Overwriting the file the last
    install wrote cost whoever came next up to 1.6x, more after a run of the Go client than
    after one of ours, and with two payloads in rotating rounds, three of every four runs of
    ours came right after a Go run, one of every four Go runs did."""
    target.unlink(missing_ok=True)


def run_timed(contender: Contender) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system, of the whole process tree) of one run."""
    contender.setup()
    for path in contender.inputs:
        subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
    # what the last run wrote goes to disk now: written back during this run, it made the
    # overwrite of the same target wait on the disk (install times varied 2x from round to
    # round, whoever came second paying for the other)
    os.sync()
    cpu = cpu_of_children() + contender.outside_cpu()
    started = time.perf_counter()
    done = subprocess.run(contender.argv, capture_output=True, text=True, check=False,
                          env=contender.env)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{contender.argv} failed ({done.returncode}):\n"
                         f"{done.stderr}{done.stdout}")
    return elapsed, cpu_of_children() + contender.outside_cpu() - cpu


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

    def fresh(self, target: Path) -> None:
        """A new data directory (the last install left its commit pending), no target."""
        fresh_target(target)
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


def jobs_for(args: argparse.Namespace, root: Path, key: tuple[Path, Path],
             others: Others) -> list[Job]:
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
            go = compression in GO_COMPRESSIONS
            writer = [GO, "write", "module-image"] if go else [OURS, "artifact", "write"]
            subprocess.run([*writer, *write_arguments(payload, compression, private, artifact)],
                           check=True, capture_output=True)
            if "verify" in args.jobs:
                verified, verified_label = artifact, label
                if compression == "lzma" and args.lzma_size_mib != args.size_mib:
                    # at --size-mib like the other rows (at 32 MiB they would weigh start-up
                    # alone), written by ours: the Go writer would take minutes
                    verified = root / f"{kind}-lzma-{args.size_mib}.mender"
                    verified_label = f"{kind} {args.size_mib} MiB, lzma"
                    subprocess.run([OURS, "artifact", "write", *write_arguments(
                        payloads[kind, args.size_mib], compression, private, verified)],
                        check=True, capture_output=True)
                jobs.append(Job(f"verify  {verified_label}", {
                    "ours": Contender([OURS, "artifact", "inspect", "--verify-key",
                                       str(public), str(verified)], [verified]),
                    **({"Go": Contender([GO, "validate", "-k", str(public), str(verified)],
                                        [verified])} if go else {})}))
            if "write" in args.jobs:
                ours_out, go_out = root / "ours-out.mender", root / "go-out.mender"
                jobs.append(Job(f"write   {label}", {
                    "ours": Contender([OURS, "artifact", "write",
                                       *write_arguments(payload, compression, private,
                                                        ours_out)], [payload]),
                    **({"Go": Contender([GO, "write", "module-image",
                                         *write_arguments(payload, compression, private,
                                                          go_out)], [payload])}
                       if go else {})}))
            if install and compression != "lzma":
                contenders = {"ours": Contender(
                    [sys.executable, str(INSTALL_CHILD), str(artifact), str(public),
                     str(data_dir), str(work)], [artifact], setup=partial(fresh_target, target))}
                if not client_problem and go:
                    client = GoClient(root / f"client-{kind}-{compression}", module, public)
                    contenders["Go"] = Contender(client.argv(artifact), [artifact],
                                                 setup=partial(client.fresh, target))
                if go:
                    contenders.update(others.install(payload, kind, compression))
                jobs.append(Job(f"install {label}", contenders))
    return jobs


class Others:
    """RAUC and SWUpdate installing the same payload, where they run (peer_installers.py)."""

    def __init__(self, root: Path, wanted: bool) -> None:
        self.root = root
        self.rauc: Rauc | None = None
        self.swupdate: Swupdate | None = None
        if not wanted:
            return
        problems = peer_installers.problem()
        for name, reason in problems.items():
            print(f"{name} left out: {reason}")
        if len(problems) == 2:
            return
        root.mkdir()
        self.ca, self.cert, self.key = peer_installers.make_ca(root / "ca")
        if "RAUC" not in problems:
            self.rauc = Rauc(root / "rauc", self.ca)
        if "SWUpdate" not in problems:
            self.swupdate = Swupdate(root / "swupdate", self.ca)

    def install(self, payload: Path, kind: str, compression: str) -> dict[str, Contender]:
        contenders = {}
        if self.rauc is not None:
            bundle = self.rauc.bundle(payload, compression, self.ca, self.cert, self.key,
                                      self.root / f"{kind}-{compression}.raucb")
            contenders["RAUC"] = Contender(self.rauc.argv(bundle), [bundle],
                                           setup=self.rauc.empty_slot,
                                           outside_cpu=self.rauc.service_cpu,
                                           env=self.rauc.env)
        if self.swupdate is not None:
            swu = self.swupdate.image(payload, compression, self.cert, self.key,
                                      self.root / f"{kind}-{compression}.swu")
            contenders["SWUpdate"] = Contender(self.swupdate.argv(swu), [swu],
                                               setup=partial(fresh_target, self.swupdate.target))
        return contenders

    def close(self) -> None:
        if self.rauc is not None:
            self.rauc.close()


def run_rounds(jobs: list[Job], rounds: int) -> list[float]:
    """Every job's contenders in turn, the order rotated each round; the load averages."""
    loads = [os.getloadavg()[0]]
    for round_number in range(rounds):
        for job in jobs:
            names = list(job.contenders)
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                contender = job.contenders[name]
                contender.samples.append(run_timed(contender))
                if os.environ.get("PEERS_VERBOSE"):
                    print(f"  round {round_number + 1} {job.name} {name}: "
                          f"{contender.samples[-1][0]:.3f} s", flush=True)
        loads.append(os.getloadavg()[0])
    return loads


def print_table(jobs: list[Job], which: int, title: str) -> None:
    """Medians of ``which`` (0 wall clock, 1 CPU), and the median per-round ratios ours/X."""
    names = ["ours", "Go", "RAUC", "SWUpdate"]
    names = [name for name in names if any(name in job.contenders for job in jobs)]
    header = f"{title:<36}" + "".join(f"{name:>9}" for name in names)
    header += "".join(f"{'ours/' + name:>14}" for name in names[1:])
    print(header)
    for job in jobs:
        ours = job.contenders["ours"].samples
        line = f"{job.name:<36}"
        for name in names:
            samples = job.contenders[name].samples if name in job.contenders else []
            line += (f"{statistics.median(s[which] for s in samples):>9.3f}" if samples
                     else f"{'':>9}")
        for name in names[1:]:
            if name in job.contenders:
                theirs = job.contenders[name].samples
                pairs = zip(ours, theirs, strict=True)
                ratio = statistics.median(o[which] / t[which] for o, t in pairs)
                line += f"{ratio:>14.2f}"
            else:
                line += f"{'':>14}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--lzma-size-mib", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", nargs="+", default=["verify", "write", "install"],
                        choices=["verify", "write", "install"])
    parser.add_argument("--compression", nargs="+", default=list(COMPRESSIONS),
                        choices=COMPRESSIONS)
    parser.add_argument("--no-others", action="store_true",
                        help="install: leave RAUC and SWUpdate out")
    parser.add_argument("--max-load", type=float, default=0.6)
    parser.add_argument("--max-wait", type=float, default=120)
    parser.add_argument("--dir", default="/var/tmp", help="where the scratch files go")
    args = parser.parse_args()
    if shutil.which(GO) is None:
        raise SystemExit("needs Debian's mender-artifact (apt-get install mender-artifact)")
    with tempfile.TemporaryDirectory(prefix="peers-", dir=args.dir) as directory:
        root = Path(directory)
        others = Others(root / "others", "install" in args.jobs and not args.no_others)
        try:
            jobs = jobs_for(args, root, make_key(root), others)
            wait_for_quiet(args.max_load, args.max_wait)
            loads = run_rounds(jobs, args.rounds)
        finally:
            others.close()
    print(f"{args.rounds} rounds; 1-minute load average {min(loads):.2f} to {max(loads):.2f} "
          f"(at the start and after each round); {os.cpu_count()} CPUs")
    print("medians (s); each ratio is the median of the per-round ratios")
    print_table(jobs, 0, "wall clock")
    print_table(jobs, 1, "CPU (user + system, process tree)")


if __name__ == "__main__":
    main()
