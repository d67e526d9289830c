"""The ``exec`` driver against real shell-script Interfaces run as subprocesses.

Every test installs ``tests/interfaces/recorder`` under a data dir, resolves it the way the
product does (``drivers.load``), and drives it through the Component's plugin manager. The
recorder logs each call to ``calls.log``; behaviour snippets written by a test replace its
default answer for one state.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator_core import drivers, exec_driver
from orchestrator_core.context import Component, InterfaceContext, RebootNeed
from orchestrator_core.errors import ConfigError, InterfaceError, InterfaceTimeout

RECORDER = Path(__file__).parent / "interfaces" / "recorder"
INTERFACE = "rtos-interface"


class Counting(logging.Handler):
    """Keeps only counts and the last message, so relaying megabytes stays cheap."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.longest = 0
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.count += 1
        self.longest = max(self.longest, len(message))
        if len(self.messages) < 50:
            self.messages.append(message)
        self.last = message


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The recorder's directory (calls.log, behaviour/), also holding the data dir."""
    monkeypatch.setenv("TEST_INTERFACE_DIR", str(tmp_path))
    interfaces = tmp_path / "data" / "interfaces" / "v1"
    interfaces.mkdir(parents=True)
    (interfaces / INTERFACE).symlink_to(RECORDER)
    return tmp_path


def behave(env: Path, state: str, script: str, key: str = "all") -> None:
    path = env / "behaviour" / key / state
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)


def calls(env: Path) -> list[list[str]]:
    log = env / "calls.log"
    if not log.exists():
        return []
    return [line.split("\t") for line in log.read_text().splitlines()]


def load(
    env: Path, args: tuple[str, ...] = ("c1", "--bus=1"), timeout: float = 20.0
) -> tuple[drivers.ComponentDriver, Callable[..., InterfaceContext]]:
    component = Component("rtos", INTERFACE, args)
    driver = drivers.load(component, env / "data")
    logger = logging.getLogger("test.exec_driver")

    def context(**fields: object) -> InterfaceContext:
        fields.setdefault("log", logger)
        fields.setdefault("timeout_seconds", timeout)
        return driver.context(**fields)

    return driver, context


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as dead)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


def dies_within(pid: int, seconds: float = 2) -> bool:
    """SIGKILL takes effect when the process is next scheduled: on a loaded machine, a moment
    after ``killpg`` returned."""
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not alive(pid)


# --------------------------------------------------------------------------- invocation


def test_query_outside_a_deployment_runs_in_a_private_dir_with_version(env: Path) -> None:
    behave(
        env,
        "Identity",
        'stat -c %a . > "$DIR/mode"; cat version > "$DIR/version_seen"; ls -A > "$DIR/ls"\n'
        "echo id=brake-1\n",
    )
    driver, context = load(env)
    assert driver.identity(context()) == "brake-1"

    [call] = calls(env)
    key, state, cwd, file_api_dir, component_type, *args = call
    assert (key, state, component_type, args) == ("c1", "Identity", "rtos", ["c1", "--bus=1"])
    assert cwd == file_api_dir
    assert (env / "mode").read_text().strip() == "700"
    assert (env / "version_seen").read_text() == "1\n"
    assert (env / "ls").read_text().split() == ["version"]
    # one such directory serves every query of the process, and goes when the process ends
    driver.identity(context())
    assert calls(env)[1][2] == cwd


def test_the_query_directory_is_removed_when_the_process_ends(env: Path) -> None:
    behave(env, "Identity", 'pwd > "$DIR/cwd"; echo id=x\n')
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import test_exec_driver as t; "
        "from pathlib import Path; d, c = t.load(Path(sys.argv[2])); print(d.identity(c()))"
    )
    result = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent), str(env)],
                            capture_output=True, text=True, check=False,
                            env={**os.environ, "TEST_INTERFACE_DIR": str(env)})
    assert result.stdout.strip() == "x", result.stderr
    assert not Path((env / "cwd").read_text().strip()).exists()


def test_states_run_in_the_file_api_dir_with_protocol_names(env: Path) -> None:
    work = env / "work" / "c1"
    work.mkdir(parents=True)
    driver, context = load(env)
    hooks = [
        "artifact_install",
        "artifact_reboot",
        "artifact_verify_reboot",
        "artifact_commit",
        "artifact_rollback",
        "artifact_rollback_reboot",
        "artifact_verify_rollback_reboot",
        "artifact_failure",
        "cleanup",
    ]
    behave(env, "ArtifactInstall", "exit 0")  # the default would read header/type-info
    behave(env, "ArtifactRollback", "exit 0")
    for hook in hooks:
        driver.run_state(hook, context(work_dir=work, component_id="c1"))
    recorded = calls(env)
    assert [c[1] for c in recorded] == [
        "ArtifactInstall",
        "ArtifactReboot",
        "ArtifactVerifyReboot",
        "ArtifactCommit",
        "ArtifactRollback",
        "ArtifactRollbackReboot",
        "ArtifactVerifyRollbackReboot",
        "ArtifactFailure",
        "Cleanup",
    ]
    for call in recorded:
        assert call[2:] == [str(work), str(work), "rtos", "c1", "--bus=1"]


def test_state_stdout_and_stderr_are_relayed_naming_interface_and_component(
    env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    behave(
        env, "ArtifactCommit", "echo committed; echo 'flash at 100%' >&2; printf 'no newline' >&2"
    )
    driver, context = load(env)
    with caplog.at_level(logging.INFO, logger="test.exec_driver"):
        driver.run_state("artifact_commit", context(component_id="c1"))
    messages = [r.getMessage() for r in caplog.records if r.name == "test.exec_driver"]
    who = f"rtos/c1 (interface {INTERFACE}) ArtifactCommit"
    assert f"{who} stdout: committed" in messages
    assert f"{who} stderr: flash at 100%" in messages
    assert f"{who} stderr: no newline" in messages


# --------------------------------------------------------------------------- query answers


@pytest.mark.parametrize(
    ("hook", "query", "printed", "expected"),
    [
        ("needs_unpacked_artifact", "NeedsUnpackedArtifact", "Yes", True),
        ("needs_unpacked_artifact", "NeedsUnpackedArtifact", "  no \n", False),
        ("needs_unpacked_artifact", "NeedsUnpackedArtifact", "", None),
        ("provide_payload_file_sizes", "ProvidePayloadFileSizes", "YES", True),
        ("provide_payload_file_sizes", "ProvidePayloadFileSizes", "\n\n", None),
        ("supports_rollback", "SupportsRollback", "yes\r\n", True),
        ("supports_rollback", "SupportsRollback", "No", False),
        ("needs_artifact_reboot", "NeedsArtifactReboot", "automatic", RebootNeed.AUTOMATIC),
        ("needs_artifact_reboot", "NeedsArtifactReboot", " Yes", RebootNeed.YES),
        ("needs_artifact_reboot", "NeedsArtifactReboot", "NO", RebootNeed.NO),
        ("needs_artifact_reboot", "NeedsArtifactReboot", "", None),
    ],
)
def test_query_answers(env: Path, hook: str, query: str, printed: str, expected: object) -> None:
    behave(env, query, f"printf '{printed}'")
    driver, context = load(env)
    assert getattr(driver.hook, hook)(ctx=context()) == expected
    assert [c[1] for c in calls(env)] == [query]


@pytest.mark.parametrize(
    ("query", "printed", "expected"),
    [
        ("NeedsUnpackedArtifact", "maybe", "expected Yes, No or nothing"),
        ("SupportsRollback", "Yes please", "expected Yes, No or nothing"),
        ("ProvidePayloadFileSizes", "Yes\\nNo", "expected Yes, No or nothing"),
        ("NeedsArtifactReboot", "sometimes", "expected No, Yes, Automatic or nothing"),
    ],
)
def test_garbage_answers_are_errors_naming_everything(
    env: Path, query: str, printed: str, expected: str
) -> None:
    behave(env, query, f"printf '{printed}'")
    driver, context = load(env)
    hook = {
        "NeedsUnpackedArtifact": "needs_unpacked_artifact",
        "SupportsRollback": "supports_rollback",
        "ProvidePayloadFileSizes": "provide_payload_file_sizes",
        "NeedsArtifactReboot": "needs_artifact_reboot",
    }[query]
    with pytest.raises(InterfaceError) as raised:
        getattr(driver.hook, hook)(ctx=context(component_id="c1"))
    message = str(raised.value)
    assert f"rtos/c1 (interface {INTERFACE})" in message
    assert f"the {query} query with {printed.replace(chr(92) + 'n', chr(10))!r}" in message
    assert expected in message


def test_a_long_garbage_answer_is_quoted_shortened(env: Path) -> None:
    behave(env, "SupportsRollback", "head -c 5000 /dev/zero | tr '\\0' z")
    driver, context = load(env)
    with pytest.raises(InterfaceError) as raised:
        driver.supports_rollback(context())
    message = str(raised.value)
    assert "z" * 200 + "... (5000 characters in all)" in message
    assert len(message) < 600


def test_provides_key_value_lines(env: Path) -> None:
    behave(
        env,
        "Provides",
        "echo 'rootfs-image.rtos-interface.version=rtos-v2'\necho\n"
        "echo '  artifact_name = rtos-v2 '\necho 'checksum=a=b'\n",
    )
    driver, context = load(env)
    assert driver.provides(context()) == {
        "rootfs-image.rtos-interface.version": "rtos-v2",
        "artifact_name": "rtos-v2",
        "checksum": "a=b",
    }


@pytest.mark.parametrize(
    ("printed", "expected"),
    [
        ("version=1\\njust words\\n", "line 2 'just words' is not a key=value line"),
        ("=v1\\n", "line 1 '=v1' is not a key=value line"),
        ("a=1\\na=2\\n", "key 'a' is given twice"),
    ],
)
def test_bad_provides_lines_are_named(env: Path, printed: str, expected: str) -> None:
    behave(env, "Provides", f"printf '{printed}'")
    driver, context = load(env)
    with pytest.raises(InterfaceError) as raised:
        driver.provides(context())
    assert "the Provides query" in str(raised.value)
    assert expected in str(raised.value)


def test_provides_without_the_version_key_is_an_error(env: Path) -> None:
    behave(env, "Provides", "echo other=1")
    driver, context = load(env)
    with pytest.raises(InterfaceError, match=r"did not report rootfs-image\.rtos-interface"):
        driver.provides(context())


def test_inventory_keeps_repeated_keys_in_order(env: Path) -> None:
    behave(env, "Inventory", "printf 'ip=10.0.0.1\\nip=10.0.0.2\\nmodel=x\\n'")
    driver, context = load(env)
    assert driver.inventory(context()) == [("ip", "10.0.0.1"), ("ip", "10.0.0.2"), ("model", "x")]


@pytest.mark.parametrize(
    "printed",
    ["", "id=a\\nid=b\\n", "name=a\\n", "id=\\n", "id=a\\nserial=3\\n", "idontknow"],
)
def test_identity_must_be_exactly_one_id_line(env: Path, printed: str) -> None:
    behave(env, "Identity", f"printf '{printed}'")
    driver, context = load(env)
    with pytest.raises(InterfaceError) as raised:
        driver.identity(context())
    assert "the Identity query" in str(raised.value)


def test_identity_default_of_the_recorder(env: Path) -> None:
    driver, context = load(env, args=("front",))
    assert driver.identity(context()) == "front"


def test_query_stdout_is_capped(env: Path) -> None:
    behave(env, "Provides", "head -c 3000000 /dev/zero | tr '\\0' y; echo done >&2")
    driver, context = load(env)
    started = time.monotonic()
    with pytest.raises(InterfaceError, match="printed more than 1048576 bytes on stdout"):
        driver.provides(context())
    assert time.monotonic() - started < 5


def test_unknown_states_stay_silent_and_succeed(env: Path) -> None:
    driver, context = load(env)
    driver.run_state("artifact_verify_reboot", context())
    assert [c[1] for c in calls(env)] == ["ArtifactVerifyReboot"]


# --------------------------------------------------------------------------- failures


def test_non_zero_exit_names_state_status_and_last_stderr(env: Path) -> None:
    behave(
        env,
        "ArtifactInstall",
        'for i in $(seq 1 20); do echo "progress $i" >&2; done\n'
        "echo 'flash write failed at 0x0800' >&2\nexit 3\n",
    )
    driver, context = load(env)
    with pytest.raises(InterfaceError) as raised:
        driver.run_state("artifact_install", context(component_id="c1"))
    message = str(raised.value)
    assert message.startswith(f"rtos/c1 (interface {INTERFACE}): ArtifactInstall failed:")
    assert "it exited with status 3" in message
    assert message.endswith(
        "progress 18 | progress 19 | progress 20 | flash write failed at 0x0800"
    )
    assert "progress 12 " not in message  # only the last lines


def test_death_by_signal_is_explained(env: Path) -> None:
    behave(env, "ArtifactCommit", "kill -SEGV $$")
    driver, context = load(env)
    with pytest.raises(InterfaceError, match=r"killed by signal SIGSEGV \(11\)"):
        driver.run_state("artifact_commit", context())


def test_shell_style_signal_status_is_explained(env: Path) -> None:
    behave(env, "ArtifactCommit", "exit 137")
    driver, context = load(env)
    with pytest.raises(
        InterfaceError, match=r"status 137 \(how a shell reports .* SIGKILL \(9\)\)"
    ):
        driver.run_state("artifact_commit", context())


def test_hang_is_killed_at_the_timeout_with_its_whole_process_group(env: Path) -> None:
    behave(env, "ArtifactInstall", 'sleep 300 & echo $! > "$DIR/child"; echo started >&2; wait')
    driver, context = load(env, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(InterfaceTimeout) as raised:
        driver.run_state("artifact_install", context(component_id="c1"))
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 1.0 + exec_driver.KILL_GRACE_SECONDS
    assert str(raised.value) == (
        f"rtos/c1 (interface {INTERFACE}): ArtifactInstall ran longer than "
        "InterfaceTimeoutSeconds (1 s) and was killed with its whole process group; "
        "its last lines on stderr: started"
    )
    assert dies_within(int((env / "child").read_text())), "the Interface's child sleep survived"


def test_an_interface_ignoring_term_is_killed(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exec_driver, "KILL_GRACE_SECONDS", 0.3)
    behave(env, "Cleanup", "trap '' TERM; sleep 300 & echo $! > \"$DIR/child\"; wait; wait")
    driver, context = load(env, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(InterfaceTimeout, match=r"Cleanup ran longer than .* \(0.5 s\)"):
        driver.run_state("cleanup", context())
    assert time.monotonic() - started < 2
    assert dies_within(int((env / "child").read_text())), "the child ignoring TERM survived"


def test_a_background_child_holding_the_pipes_does_not_hold_the_call(env: Path) -> None:
    behave(env, "Identity", 'sleep 30 & echo $! > "$DIR/child"; echo id=c1')
    driver, context = load(env)
    started = time.monotonic()
    try:
        assert driver.identity(context()) == "c1"
        assert time.monotonic() - started < 2
    finally:
        os.kill(int((env / "child").read_text()), 9)


def test_lots_of_stderr_is_relayed_in_bounded_memory(env: Path) -> None:
    # one 8 MiB line without an end, then 20000 ordinary lines
    behave(
        env,
        "ArtifactInstall",
        "head -c 8388608 /dev/zero | tr '\\0' x >&2; echo >&2; seq 1 20000 >&2; echo done\n",
    )
    handler = Counting()
    logger = logging.getLogger("test.exec_driver.quiet")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    driver, context = load(env)
    try:
        tracemalloc.start()
        driver.run_state("artifact_install", context(log=logger))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        logger.removeHandler(handler)
    pieces = 8388608 // exec_driver.LINE_LIMIT
    assert handler.count == pieces + 20000 + 1  # + stdout's "done"
    assert handler.longest < exec_driver.LINE_LIMIT + 200
    assert handler.messages[0].endswith("x" * 100)
    assert peak < 4 << 20, f"peak traced memory {peak} bytes"


def test_an_executable_that_cannot_start_is_reported(env: Path) -> None:
    broken = env / "data" / "interfaces" / "v1" / "broken"
    broken.write_text("#!/nonexistent/interpreter\n")
    broken.chmod(0o755)
    driver = drivers.load(Component("rtos", "broken"), env / "data")
    ctx = driver.context(log=logging.getLogger("test"), timeout_seconds=5)
    with pytest.raises(InterfaceError, match=rf"{broken} could not be started for Identity"):
        driver.identity(ctx)


# --------------------------------------------------------------------------- interface: exec


def test_from_topology_runs_the_executable_given_in_interface_args(env: Path) -> None:
    executable = str(env / "data" / "interfaces" / "v1" / INTERFACE)
    component = Component("rtos", "exec", (executable, "c7", "--address=0x48"))
    plugin = exec_driver.from_topology(component)
    driver = drivers.ComponentDriver(component, drivers.Resolution("exec", "driver", "x"), plugin)
    ctx = driver.context(log=logging.getLogger("test"), timeout_seconds=5)
    assert driver.identity(ctx) == "c7"
    assert calls(env)[0][4:] == ["rtos", "c7", "--address=0x48"]


def test_the_components_of_one_executable_share_its_driver_each_call_with_its_own_args(
    env: Path,
) -> None:
    shared = drivers.ExecutableManagers()
    components = [
        Component("rtos", INTERFACE, ("c1", "--bus=1")),
        Component("dsp", INTERFACE, ("c2",), position=1),
        Component("mcu", INTERFACE, (), position=2),
    ]
    loaded = [drivers.load(c, env / "data", shared) for c in components]
    assert len({id(d.pm) for d in loaded}) == 1
    assert [d.component for d in loaded] == components
    logger = logging.getLogger("test.exec_driver")
    ids = [d.identity(d.context(log=logger, timeout_seconds=20)) for d in loaded]
    assert ids == ["c1", "c2", "mcu"]
    assert [call[4:] for call in calls(env)] == [
        ["rtos", "c1", "--bus=1"],
        ["dsp", "c2"],
        ["mcu"],
    ]
    # without a shared set (a single query, a test), each load has a manager of its own
    alone = drivers.load(components[0], env / "data")
    assert alone.pm is not loaded[0].pm


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "needs the absolute path of the Interface executable"),
        (("relative/path",), "needs the absolute path of the Interface executable"),
        (("/nonexistent/interface",), "/nonexistent/interface is not an executable file"),
    ],
)
def test_from_topology_refuses_bad_interface_args(args: tuple[str, ...], expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        exec_driver.from_topology(Component("rtos", "exec", args, position=2))
    assert str(raised.value).startswith("rtos[2] (interface exec): ")
    assert expected in str(raised.value)


def test_from_topology_refuses_a_file_that_is_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "iface"
    script.write_text("#!/bin/sh\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    with pytest.raises(ConfigError, match="is not an executable file"):
        exec_driver.from_topology(Component("rtos", "exec", (str(script),)))
