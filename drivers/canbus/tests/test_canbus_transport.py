"""A transport that cannot hang: refused frames (ENOBUFS, bus-off, error-passive), a bus paced
at its bit rate with socketcan's 10-frame transmit queue, flow-control WAIT frames, the ISO-TP
timers apart from P2, the bus-load cap, the deadline and ctx.cancelled.

The ECU simulator runs in a thread on the ``paced`` python-can interface (a ``virtual`` bus
delivered at the bit rate); the driver is called through the hook path (``Harness``).
"""

from __future__ import annotations

import errno
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import can
import isotp
import pytest
from canbus_helpers import (
    BANK,
    OLD_VERSION,
    QUICK_ECU,
    SERIAL,
    Harness,
    Outcome,
    Reports,
    after,
    pseudo_random,
)
from orchestrator_core.context import Component
from orchestrator_core.drivers import load
from orchestrator_core.errors import ConfigError, InterfaceError, InterfaceTimeout

from mender_orchestrator_canbus import transport
from mender_orchestrator_canbus.link import LinkSettings
from mender_orchestrator_canbus.simulator import Ecu, EcuServer, Faults, FlashStore
from mender_orchestrator_canbus.simulator.pacedbus import Wire
from mender_orchestrator_canbus.transport import (
    CanConnection,
    KernelIsoTpConnection,
    LinkFailure,
    SharedBus,
    TransportSettings,
    Waiting,
    kernel_has_isotp,
    open_connection,
)

TESTER_ID = 0x7E0  # the tester's frames: most faults below are injected on them only
ECU_ID = 0x7E8
IMAGE = pseudo_random("paced-2.0.0", 24000)  # 6 TransferData blocks
NEW_VERSION = "brake-2.0.0"
FLASHED = ["download", "artifact_install", "artifact_reboot", "artifact_verify_reboot",
           "artifact_commit", "cleanup"]  # fmt: skip


class PacedEcu:
    def __init__(self, state: Path, server: EcuServer, link: LinkSettings, bank: int) -> None:
        self.state = state
        self.server = server
        self.link = link
        self.bank = bank
        self.wire = Wire.get(link.channel)

    def args(self, *extra: str, p2: float = 0.3) -> tuple[str, ...]:
        """The driver's arguments; those in ``extra`` replace the defaults here."""
        link = self.link
        defaults = ("--interface=paced", f"--channel={link.channel}", f"--bitrate={link.bitrate}",
                    f"--tx-id={link.tx_id:#x}", f"--rx-id={link.rx_id:#x}",
                    f"--memory-size={self.bank:#x}", "--banks=2", f"--p2-timeout={p2}",
                    "--p2-star-timeout=2", "--reset-wait=1.5", "--retries=2")  # fmt: skip
        given = {arg.split("=", 1)[0] for arg in extra}
        return (*(arg for arg in defaults if arg.split("=", 1)[0] not in given), *extra)

    def booting(self) -> bytes:
        """The image in the bank the ECU boots (dual bank: no upload of the old image, which
        would only slow these tests down)."""
        store = FlashStore(self.state)
        return store.read(store.layout.boot_bank, 0, self.bank)

    def flashed(self, size: int = len(IMAGE)) -> bytes:
        """The bank the last download went to (the one not running before)."""
        return FlashStore(self.state).read(1, 0, size)


@pytest.fixture
def paced_ecu(tmp_path: Path) -> Iterator[Callable[..., PacedEcu]]:
    servers: list[EcuServer] = []

    def start(
        bitrate: int = 500_000,
        fc_waits: int = 0,
        fc_wait_gap: float = 0.1,
        bank: int = BANK,
        channel: str | None = None,
        ids: tuple[int, int] = (TESTER_ID, ECU_ID),
        serial: str = SERIAL,
    ) -> PacedEcu:
        channel = channel or f"virtual:paced-{uuid.uuid4().hex}"
        link = LinkSettings(interface="paced", channel=channel, bitrate=bitrate, tx_id=ids[0],
                            rx_id=ids[1])  # fmt: skip
        state = tmp_path / f"ecu-{len(servers)}.json"
        FlashStore.create(state, banks=2, bank_size=bank, serial=serial, version=OLD_VERSION,
                          image=pseudo_random("initial", 12000))  # fmt: skip
        ecu = Ecu(FlashStore(state), QUICK_ECU, Faults())
        server = EcuServer(link.mirrored(), ecu, fc_waits=fc_waits, fc_wait_gap=fc_wait_gap)
        server.start()
        servers.append(server)
        return PacedEcu(state, server, link, bank)

    yield start
    for server in servers:
        server.stop()


def harness(
    ecu: PacedEcu,
    tmp_path: Path,
    *extra: str,
    timeout: float = 20.0,
    p2: float = 0.3,
    component_type: str = "ecu_brake",
) -> Harness:
    component = Component(component_type, "canbus", ecu.args(*extra, p2=p2))
    return Harness(component, tmp_path, timeout)


def install(h: Harness, image: bytes = IMAGE) -> Outcome:
    """Identity, then the install alone (the faults below hit it; no rollback traffic)."""
    if h.component_id is None:
        h.component_id = h.query("identity")
    h.work_dir.mkdir(parents=True, mode=0o700)
    h.stage(image, NEW_VERSION)
    outcome = Outcome()
    h.state("artifact_install", outcome)
    return outcome


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_one_refused_frame_kills_can_isotp_and_a_blocking_send_never_returns(
    paced_ecu: Callable[..., PacedEcu],
) -> None:
    """The hang as it was: can-isotp's CanStack with blocking sends (what the driver used;
    udsoncan sends without a timeout) on a bus that refuses one frame. The refusal ends
    can-isotp's thread; the driver took the failure for a lost block and sent it again, and
    that send waits for a thread that is gone."""
    ecu = paced_ecu()
    link = ecu.link
    bus = link.open_bus()
    stack = isotp.CanStack(bus, address=link.isotp_address(),
                           params=link.isotp_params(timeout=1.0, max_frame_size=0xFFFF,
                                                    logger="test.isotp"))  # fmt: skip
    stack.start()
    try:
        ecu.wire.inject(errno.ENOBUFS, count=1, arbitration_id=TESTER_ID)
        with pytest.raises(isotp.BlockingSendFailure):
            stack.send(bytes(100))
        assert stack.main_thread is not None
        stack.main_thread.join(1)
        assert not stack.main_thread.is_alive()
        with pytest.raises(isotp.BlockingSendTimeout):
            # udsoncan passes no timeout: only the one given here ends the wait
            stack.send(bytes(100), send_timeout=1.0)
    finally:
        stack.stop()
        bus.shutdown()


def test_two_ecus_on_one_paced_bus_are_flashed_at_once_through_one_shared_bus(
    paced_ecu: Callable[..., PacedEcu], tmp_path: Path
) -> None:
    """As the engine runs one order group: each state of both Components at once, in threads
    of one process. The tester opens the channel once; each ECU gets its own image, although
    every frame of one transfer reaches the other's ISO-TP layer too."""
    front = paced_ecu(serial="SIM-FRONT-0001")
    rear = paced_ecu(channel=front.link.channel, ids=(0x7E1, 0x7E9), serial="SIM-REAR-0002")
    images = {"ecu_front": pseudo_random("front", 20000), "ecu_rear": pseudo_random("rear", 16000)}
    ecus = {"ecu_front": front, "ecu_rear": rear}
    harnesses = {name: harness(ecu, tmp_path / name, component_type=name)
                 for name, ecu in ecus.items()}  # fmt: skip
    users: list[int] = []  # testers on the shared bus, seen at each block of either
    for name, h in harnesses.items():
        h.component_id = h.query("identity")
        h.work_dir.mkdir(parents=True, mode=0o700)
        h.stage(images[name], NEW_VERSION)
        h.progress = Reports(lambda _count: users.extend(
            shared.users for key, shared in SharedBus._registry.items()
            if front.link.channel in key
        ))  # fmt: skip
    outcomes = {name: Outcome() for name in harnesses}
    for state in ("artifact_install", "artifact_reboot", "artifact_verify_reboot"):
        errors: list[BaseException] = []

        def run(name: str, state: str = state, errors: list[BaseException] = errors) -> None:
            try:
                harnesses[name].state(state, outcomes[name])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(name,)) for name in harnesses]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors

    for name, ecu in ecus.items():
        assert ecu.booting() == images[name] + b"\xff" * (BANK - len(images[name]))
        assert harnesses[name].query("provides") == {"rootfs-image.canbus.version": NEW_VERSION}
    assert max(users) == 2 and len(users) == 5 + 4  # one bus, both testers on it, every block


def test_one_refused_frame_is_sent_again_and_the_update_completes(
    paced_ecu: Callable[..., PacedEcu], tmp_path: Path
) -> None:
    ecu = paced_ecu()
    ecu.wire.inject(errno.ENOBUFS, count=1, arbitration_id=TESTER_ID)
    h = harness(ecu, tmp_path, timeout=10)

    outcome = h.deploy(IMAGE, NEW_VERSION)

    assert outcome.failure is None
    assert outcome.states == FLASHED
    assert ecu.wire.refused >= 1
    assert ecu.booting() == IMAGE + b"\xff" * (BANK - len(IMAGE))


def test_256_kib_go_through_the_paced_500k_bus_and_its_10_frame_queue(
    paced_ecu: Callable[..., PacedEcu], tmp_path: Path
) -> None:
    """The issue's case: 256 KiB through a 500 kbit/s bus whose transmit queue holds 10 frames.
    The driver sends faster than the bus drains the queue: socketcan's ENOBUFS, thousands of
    times, each frame sent again as soon as there is room, and the whole image lands."""
    image = pseudo_random("paced-256k", 256 * 1024)
    ecu = paced_ecu(bank=len(image))
    h = harness(ecu, tmp_path, timeout=120)

    outcome = h.deploy(image, NEW_VERSION)

    assert outcome.failure is None, outcome.failure
    assert outcome.states == FLASHED
    assert ecu.booting() == image
    assert ecu.wire.refused > 1000  # the queue was full again and again
    # every byte went in 7-byte consecutive frames: at least 256 KiB / 7 frames on the wire
    assert ecu.wire.frames > len(image) // 7


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.ENETDOWN, "the controller is bus-off or the interface is down (ENETDOWN)"),
        (errno.ENOBUFS, "the interface's transmit queue stayed full (ENOBUFS)"),
        ("Bus error: the controller is error passive",
         "the controller is error-passive (Failed to transmit: Bus error: the controller is "
         "error passive)"),
    ],
)  # fmt: skip
def test_a_frame_refused_beyond_n_as_ends_the_state_with_the_reason(
    paced_ecu: Callable[..., PacedEcu], tmp_path: Path, code: int | str, expected: str
) -> None:
    ecu = paced_ecu()
    h = harness(ecu, tmp_path, "--n-as=0.3", timeout=10)
    h.component_id = h.query("identity")
    ecu.wire.inject(code, seconds=30, arbitration_id=TESTER_ID)
    started = time.monotonic()

    with pytest.raises(InterfaceError) as failure:
        install(h)

    assert time.monotonic() - started < 2
    message = failure.value.message
    assert message.startswith(
        "ecu_brake/SIM-BRAKE-0042 (interface canbus): ReadDataByIdentifier 0xf189 (0x22): "
        "could not send the request: the CAN interface kept refusing a frame for N_As (0.3 s, "
    )
    assert message.endswith(f" attempts): {expected}")


def test_a_bus_off_shorter_than_n_as_is_ridden_out(
    paced_ecu: Callable[..., PacedEcu], tmp_path: Path
) -> None:
    ecu = paced_ecu()
    h = harness(ecu, tmp_path, timeout=10)
    h.component_id = h.query("identity")
    ecu.wire.inject(errno.ENETDOWN, seconds=0.3, arbitration_id=TESTER_ID)

    install(h)

    assert ecu.wire.refused > 1
    assert ecu.flashed() == IMAGE


def test_the_interface_timeout_ends_a_send_that_keeps_being_refused(
    paced_ecu: Callable[..., PacedEcu], tmp_path: Path
) -> None:
    ecu = paced_ecu()
    h = harness(ecu, tmp_path, "--n-as=3600", timeout=1.5)
    ecu.wire.inject(errno.ENETDOWN, seconds=30, arbitration_id=TESTER_ID)
    started = time.monotonic()

    with pytest.raises(InterfaceTimeout, match=r"timeout expired during ReadDataByIdentifier"):
        h.query("identity")

    assert time.monotonic() - started < 2.5


def test_ctx_cancelled_stops_a_transfer_at_once(
    paced_ecu: Callable[..., PacedEcu], tmp_path: Path
) -> None:
    ecu = paced_ecu()
    h = harness(ecu, tmp_path, timeout=30)
    h.component_id = h.query("identity")
    h.work_dir.mkdir(parents=True, mode=0o700)
    h.stage(pseudo_random("big", 60000), NEW_VERSION)
    driver = h.driver()
    ctx = h._ctx(driver)
    stopped = threading.Timer(0.5, ctx.cancelled.set)
    stopped.start()
    started = time.monotonic()

    with pytest.raises(InterfaceTimeout, match=r"stopped during .*: the call was cancelled"):
        driver.run_state("artifact_install", ctx)

    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("extra", "failure"),
    [
        ((), None),  # N_Bs (1 s) outlasts each 0.2 s WAIT gap; P2 is 0.15 s
        (("--fc-wait-max=1",),
         "could not send the request: the ECU sent more flow-control WAIT frames than "
         "--fc-wait-max=1 allows"),
        (("--n-bs=0.1",),  # the ECU's silence: a request it did not answer
         "WriteDataByIdentifier 0xf189 (0x2E): no answer from the ECU (interface paced, "
         "channel {channel}, tx 0x7e0 / rx 0x7e8): no flow-control frame from the ECU within "
         "N_Bs (0.1 s, --n-bs)"),
    ],
)  # fmt: skip
def test_flow_control_wait_frames_are_accepted_up_to_the_limit(
    paced_ecu: Callable[..., PacedEcu],
    tmp_path: Path,
    extra: tuple[str, ...],
    failure: str | None,
) -> None:
    ecu = paced_ecu(bitrate=1_000_000, fc_waits=2, fc_wait_gap=0.2)
    h = harness(ecu, tmp_path, *extra, timeout=20, p2=0.15)
    image = IMAGE[:4000]  # one TransferData block: every multi-frame request waits 0.4 s
    if failure is None:
        install(h, image)
        assert ecu.flashed()[: len(image)] == image
        return
    with pytest.raises(InterfaceError) as raised:
        install(h, image)
    assert raised.value.message.endswith(failure.format(channel=ecu.link.channel))


def test_the_bus_load_cap_is_what_the_tester_takes_of_the_wire(
    paced_ecu: Callable[..., PacedEcu], tmp_path: Path
) -> None:
    """--max-bus-load=50 measured on the paced wire: the tester's frames take at most half of
    any half second (the token bucket's catch-up of 4 frames aside), and at least 30% of the
    busiest one (the cap spaces frames, it does not starve the transfer)."""
    ecu = paced_ecu()
    h = harness(ecu, tmp_path, "--max-bus-load=50", timeout=20)

    install(h)

    assert ecu.flashed() == IMAGE
    highest, _mean = ecu.wire.load(TESTER_ID, window=0.5)
    assert 0.3 < highest <= 0.51, highest
    # spaced frames seldom find the transmit queue full (about one frame in four without the
    # cap); seldom, not never: on a loaded machine the simulated wire's thread runs late
    assert ecu.wire.refused < ecu.wire.frames // 20


def test_without_a_cap_the_tester_fills_the_wire(
    paced_ecu: Callable[..., PacedEcu], tmp_path: Path
) -> None:
    """The same measure without --max-bus-load: the cap above is what held the tester back."""
    ecu = paced_ecu()
    h = harness(ecu, tmp_path, timeout=20)

    install(h)

    highest, _mean = ecu.wire.load(TESTER_ID, window=0.5)
    assert highest > 0.6, highest


@pytest.mark.parametrize("silence", ["ecu", "bus-off"])
def test_a_link_gone_silent_mid_transfer_ends_the_state_at_its_deadline(
    paced_ecu: Callable[..., PacedEcu], tmp_path: Path, silence: str
) -> None:
    """After two TransferData blocks the ECU goes away (its simulator stops) or the tester's
    controller goes bus-off for good. Retries (50 x P2) and N_As (an hour) would outlast the
    hook's 4 s: the deadline ends the state, with a message naming the block."""
    ecu = paced_ecu()
    h = harness(ecu, tmp_path, "--retries=50", "--n-as=3600", timeout=4)
    h.component_id = h.query("identity")
    if silence == "ecu":
        h.progress = after(2, ecu.server.stop)
    else:
        h.progress = after(2, lambda: ecu.wire.inject(errno.ENETDOWN, seconds=60,
                                                      arbitration_id=TESTER_ID))  # fmt: skip
    started = time.monotonic()

    with pytest.raises(InterfaceTimeout) as raised:
        install(h)

    assert time.monotonic() - started < 4 + 1
    assert re.fullmatch(
        r"ecu_brake/SIM-BRAKE-0042 \(interface canbus\): the Interface timeout expired during "
        r"TransferData \(0x36\) block \d of 6, counter 0x0\d",
        raised.value.message,
    ), raised.value.message
    assert len(h.progress) == 2


def test_an_answer_that_breaks_off_fails_after_n_cr_not_p2(
    paced_ecu: Callable[..., PacedEcu], tmp_path: Path
) -> None:
    """The ECU's first frame arrives, its consecutive frames never do: the tester gives up
    after N_Cr (0.1 s), not after the 5 s of P2, and says which timer ran out."""
    ecu = paced_ecu()
    h = harness(ecu, tmp_path, "--n-cr=0.1", "--retries=0", timeout=20, p2=5)
    # the serial (DID 0xF18C, 14 characters) needs a first frame and consecutive frames
    ecu.wire.inject(errno.ENOBUFS, seconds=60, arbitration_id=ECU_ID, frame_type=2)

    with pytest.raises(InterfaceError) as raised:
        h.query("identity")

    assert raised.value.message.endswith(
        "ReadDataByIdentifier 0xf18c (0x22): no answer from the ECU (interface paced, channel "
        f"{ecu.link.channel}, tx 0x7e0 / rx 0x7e8): the answer broke off: no consecutive frame "
        "from the ECU within N_Cr (0.1 s, --n-cr)"
    ), raised.value.message


def test_a_single_frame_outside_iso_tp_is_retried_like_the_others(
    paced_ecu: Callable[..., PacedEcu],
) -> None:
    """``CanConnection.send_frame``: a functional request's single frame (0x7DF) goes through
    the same retries, and fails with the same reason once N_As is over."""
    ecu = paced_ecu()
    settings = TransportSettings(n_as=0.2)
    listener = ecu.link.open_bus()
    frame = can.Message(arbitration_id=0x7DF, data=bytes.fromhex("0228830000000000"),
                        is_extended_id=False)  # fmt: skip
    connection = CanConnection(ecu.link, settings, Waiting("ecu", time.monotonic() + 5, None), "t")
    connection.open()
    try:
        ecu.wire.inject(errno.ENOBUFS, count=3, arbitration_id=0x7DF)
        connection.send_frame(frame)
        received = listener.recv(1)
        assert received is not None and bytes(received.data) == bytes(frame.data)
        ecu.wire.inject(errno.ENETDOWN, seconds=5, arbitration_id=0x7DF)
        with pytest.raises(LinkFailure, match=r"could not send the frame: the CAN interface kept "
                                              r"refusing a frame for N_As \(0.2 s, "):  # fmt: skip
            connection.send_frame(frame)
    finally:
        connection.close()
        listener.shutdown()
    assert ecu.wire.refused > 3


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--max-bus-load=50"], "--max-bus-load needs --bitrate (the cap is a share of it)"),
        (["--bitrate=500000", "--max-bus-load=50", "--isotp=kernel"],
         "--max-bus-load needs --isotp=user or auto (the kernel paces nothing)"),
        (["--transport=doip", "--host=127.0.0.1"],
         "--transport=doip needs --host and --logical-address"),
        (["--logical-address=0x10"], "--logical-address needs --transport=doip"),
        (["--fc-wait-max=256"], "argument --fc-wait-max"),
        (["--n-bs=0"], "argument --n-bs"),
        (["--isotp=kernel-ish"], "argument --isotp"),
    ],
)  # fmt: skip
def test_transport_arguments_are_checked_up_front(args: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(Component("ecu_brake", "canbus", tuple(args)), Path("/nonexistent"))
    message = raised.value.message
    assert message.startswith(f"ecu_brake[0] (interface canbus): invalid interface_args {args}: ")
    assert expected in message and "\n" not in message


def test_the_kernel_backend_says_when_the_kernel_has_no_can_isotp(
    paced_ecu: Callable[..., PacedEcu], tmp_path: Path
) -> None:
    """The kernel path cannot be exercised here (no CAN_ISOTP on this machine): asked for,
    it fails with a message that points at --isotp=user."""
    ecu = paced_ecu()
    h = harness(ecu, tmp_path, "--isotp=kernel", timeout=5)
    with pytest.raises(InterfaceError, match=r"cannot open a kernel ISO-TP socket on "
                                             r".*--isotp=user uses can-isotp instead"):  # fmt: skip
        h.query("identity")


def test_auto_uses_can_isotp_where_the_kernel_has_no_can_isotp(tmp_path: Path) -> None:
    """--isotp=auto on socketcan, on this machine (no CAN_ISOTP): the Python ISO-TP layer is
    chosen, so opening the bus fails the way python-can does, not the kernel socket's way."""
    if kernel_has_isotp():
        pytest.skip("this kernel has CAN_ISOTP: auto picks the kernel's ISO-TP here")
    component = Component("ecu_brake", "canbus", ("--interface=socketcan", "--channel=vcan9"))
    h = Harness(component, tmp_path, timeout=5)

    with pytest.raises(InterfaceError) as raised:
        h.query("identity")

    assert raised.value.message.startswith(
        "ecu_brake[0] (interface canbus): cannot open the CAN bus (interface socketcan, channel "
        "vcan9, tx 0x7e0 / rx 0x7e8): "
    ), raised.value.message
    assert "kernel ISO-TP" not in raised.value.message


@pytest.mark.parametrize(
    ("interface", "options", "expected"),
    [
        ("socketcan", {}, KernelIsoTpConnection),
        ("socketcan", {"isotp": "user"}, CanConnection),
        ("socketcan", {"max_bus_load": 50}, CanConnection),  # the cap needs the Python layer
        ("virtual", {}, CanConnection),
        ("paced", {"isotp": "kernel"}, KernelIsoTpConnection),  # asked for: refused on open
    ],
)
def test_auto_picks_the_kernel_isotp_on_socketcan_where_the_kernel_has_it(
    monkeypatch: pytest.MonkeyPatch, interface: str, options: dict[str, Any], expected: type
) -> None:
    """The choice alone (no socket opened): a kernel with CAN_ISOTP is assumed here."""
    monkeypatch.setattr(transport, "kernel_has_isotp", lambda: True)
    link = LinkSettings(interface=interface, channel="can0", bitrate=500_000)
    waiting = Waiting("ecu", time.monotonic() + 5, None)

    connection = open_connection(link, TransportSettings(**options), waiting, "t")

    assert type(connection) is expected
