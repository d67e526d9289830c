"""A stand-in for ``mender-update`` (Mender client 4 and 5) in standalone mode, faithful to its
documented command line, for testing the system device's Interface without the C++ client.

    mender-update [--config F] [--fallback-config F] [--data DIR] [--log-level L] COMMAND ...
    install [--reboot-exit-code] [--stop-before STATE]... ARTIFACT
    resume [--reboot-exit-code] [--stop-before STATE]...
    commit [--stop-before STATE]...     only before ArtifactCommit_Enter; 2: no update
    rollback [--stop-before STATE]...   up to ArtifactCommit_Leave; 2: no update
    show-artifact, show-provides, --version (5.1.0)

STATE is one of ArtifactInstall_Enter, ArtifactCommit_Enter, ArtifactCommit_Leave,
ArtifactRollback_Enter, ArtifactFailure_Enter, Cleanup; the client always stops after
ArtifactInstall when the payload supports rollback (a rootfs-image does). A rootfs-image
payload requests a reboot: exit 4 with --reboot-exit-code. The messages are the client's own.
Its state is a JSON file in the data directory; every command line is appended to
``<data>/calls``. The ARTIFACT is read to its end (a pipe works) and its header-info gives the
name and Provides that the end of a commit (the client's Cleanup) makes current.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

STOPS = ("ArtifactInstall_Enter", "ArtifactCommit_Enter", "ArtifactCommit_Leave",
         "ArtifactRollback_Enter", "ArtifactFailure_Enter", "Cleanup")
# where an update stands between two commands: "before <state>"
COMMIT_FROM = {"ArtifactCommit_Enter"}
ROLLBACK_FROM = {"ArtifactInstall_Enter", "ArtifactCommit_Enter", "ArtifactCommit_Leave"}
EXIT_FAILED, EXIT_NO_UPDATE, EXIT_REBOOT = 1, 2, 4


def read_artifact(path: str) -> dict[str, object]:
    with open(path, "rb") as stream:
        data = stream.read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as outer:
        member = outer.extractfile("header.tar.gz")
        assert member is not None
        with tarfile.open(fileobj=io.BytesIO(member.read()), mode="r:gz") as header:
            info = header.extractfile("header-info")
            assert info is not None
            header_info = json.load(info)
    provides = dict(header_info.get("artifact_provides", {}))
    for payload in header_info["payloads"]:
        if payload["type"] == "rootfs-image":
            provides.setdefault("rootfs-image.version", provides["artifact_name"])
    return {"name": provides.pop("artifact_name"), "provides": provides,
            "reboot": any(p["type"] == "rootfs-image" for p in header_info["payloads"])}


class Client:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.state_file = data / "standin-state.json"
        self.db = data / "standin-db.json"

    def load(self) -> dict[str, object] | None:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else None

    def save(self, update: dict[str, object] | None) -> None:
        if update is None:
            self.state_file.unlink(missing_ok=True)
        else:
            self.state_file.write_text(json.dumps(update))

    def current(self) -> dict[str, object]:
        if self.db.exists():
            return dict(json.loads(self.db.read_text()))
        return {"name": "", "provides": {}}

    def run(self, update: dict[str, object], stops: list[str], reboot_exit: bool,
            rolling_back: bool = False) -> int:
        """Runs from where the update stands to the next stop or the end."""
        first = bool(update.pop("resumed_here", False))  # resume: not the stop it is at
        while True:
            at = str(update["before"])
            if at in stops and not first:
                self.save(update)
                print("Streamed to storage, but not installed/enabled." if at ==
                      "ArtifactInstall_Enter" else f"Stopped before {at}.")
                return 0
            first = False
            if rolling_back:
                self.save(None)
                print("Rolled back.")
                return 0
            if at == "ArtifactInstall_Enter":
                update["before"] = "ArtifactCommit_Enter"
                self.save(update)  # it always stops after ArtifactInstall (rollback support)
                print("Installed, but not committed.\n"
                      "Use 'commit' to update, or 'rollback' to roll back the update.")
                if update["reboot"]:
                    print("At least one payload requested a reboot of the device it updated.")
                    return EXIT_REBOOT if reboot_exit else 0
                return 0
            if at == "ArtifactCommit_Enter":
                update["before"] = "ArtifactCommit_Leave"
            elif at == "ArtifactCommit_Leave":
                update["before"] = "Cleanup"
            else:  # as the client does, the database learns the Artifact in Cleanup
                self.db.write_text(json.dumps({"name": update["name"],
                                               "provides": update["provides"]}))
                self.save(None)
                print("Committed.")
                return 0


def main(argv: list[str]) -> int:
    data = Path("/var/lib/mender")
    args = list(argv)
    while args and args[0].startswith("-") and args[0] != "--version":
        option = args.pop(0)
        if option in ("--data", "-d"):
            data = Path(args.pop(0))
        elif option in ("--config", "-c", "--fallback-config", "-b", "--log-level", "-l"):
            args.pop(0)
    if args == ["--version"]:
        print("5.1.0")
        return 0
    data.mkdir(parents=True, exist_ok=True)
    with (data / "calls").open("a") as calls:
        calls.write(" ".join(args) + "\n")
    client = Client(data)
    command, rest = args[0], args[1:]
    stops, reboot_exit, positional = [], False, []
    while rest:
        word = rest.pop(0)
        if word == "--stop-before":
            stop = rest.pop(0)
            if stop not in STOPS:
                print(f"Invalid --stop-before state {stop}", file=sys.stderr)
                return EXIT_FAILED
            stops.append(stop)
        elif word == "--reboot-exit-code" and command in ("install", "resume"):
            reboot_exit = True
        else:
            positional.append(word)
    if command == "show-artifact":
        print(client.current()["name"] or "unknown")
        return 0
    if command == "show-provides":
        current = client.current()
        if current["name"]:
            print(f"artifact_name={current['name']}")
        for key, value in sorted(dict(current["provides"]).items()):  # type: ignore[call-overload]
            print(f"{key}={value}")
        return 0
    update = client.load()
    if command == "install":
        if update is not None:
            print("Update already in progress. Please commit or roll back first",
                  file=sys.stderr)
            return EXIT_FAILED
        new: dict[str, object] = {**read_artifact(positional[0]),
                                  "before": "ArtifactInstall_Enter"}
        return client.run(new, stops, reboot_exit)
    if update is None:
        print("No update in progress.")
        return EXIT_NO_UPDATE
    update["resumed_here"] = True
    if command == "resume":
        return client.run(update, stops, reboot_exit)
    if command == "commit":
        if update["before"] not in COMMIT_FROM:
            print(f"Cannot commit from this state ({update['before']}). "
                  "Make sure that the `install` command has run successfully and the device is "
                  "expecting a commit.", file=sys.stderr)
            return EXIT_FAILED
        return client.run(update, stops, False)
    if command == "rollback":
        if update["before"] not in ROLLBACK_FROM:
            print(f"Cannot roll back from this state ({update['before']}).", file=sys.stderr)
            return EXIT_FAILED
        return client.run(update, stops, False, rolling_back=True)
    print(f"unknown command {command}", file=sys.stderr)
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
