"""The host side of the STM32 system-bootloader I2C protocol (ST AN4221), over smbus2 ``i2c_rdwr``.

Each frame is one I2C transfer (START, address, bytes, STOP); every step of a command is
acknowledged by the bootloader with a one-byte frame: ACK, NACK, or, for the no-stretch
commands, BUSY until the flash operation is over. The clock-stretching forms instead hold the
clock low while they work, which many Linux I2C adapters time out on; the driver therefore
uses the no-stretch forms whenever the bootloader lists them.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Sequence

from orchestrator_core.driver_api import InterfaceError, InterfaceTimeout
from smbus2 import i2c_msg

from mender_orchestrator_i2c.an4221 import (
    ACK,
    BUSY,
    COMMANDS_BY_VERSION,
    MAX_TRANSFER,
    NACK,
    Command,
    address_frame,
    command_frame,
    xor,
)
from mender_orchestrator_i2c.bus import I2CBus
from mender_orchestrator_i2c.settings import Settings

STRETCHING = "(clock stretching)"  # ends the description of a command that stretches
# AN4221: Read Memory NACKs an address outside the memory map (or any, under readout
# protection); on a working bus that nearly always means the Topology's addresses are wrong
ADDRESS_REFUSED = (
    " (the address is outside this MCU's memory, or readout protection is on: check "
    "--flash-base, --flash-size, --version-record and --uid-address)"
)
RESYNC_TRIES = 4
# AN4221: Write Memory and Erase NACK a write-protected page (and a failed operation)
PAGE_REFUSED = " (a write-protected page? --write-unprotect=yes removes write protection)"
ERASE_BATCH = 32  # pages per no-stretch Erase; a clock-stretching Erase does one page at a time


class BootloaderError(InterfaceError):
    """The bootloader refused or garbled a step of a command."""


class Nacked(BootloaderError):
    """The bootloader answered NACK."""


class NotBootloader(BootloaderError):
    """Something answered, but not as the bootloader does (an application at its address)."""


class NoAnswer(BootloaderError):
    """A transfer failed at the bus level: nothing acknowledged, or the adapter gave up."""


class Bootloader:
    """One conversation with the bootloader of one MCU, bounded by a deadline."""

    def __init__(self, bus: I2CBus, settings: Settings, deadline: float, name: str) -> None:
        self.bus = bus
        self.settings = settings
        self.deadline = deadline
        self.where = f"{name}: {settings.where}"  # how every message starts
        self.version = 0
        self.commands: tuple[int, ...] = ()
        self.write_command = Command.WRITE_MEMORY
        self.erase_command = Command.ERASE

    # ------------------------------------------------------------------ frames

    def _transfer(self, message: i2c_msg, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise InterfaceTimeout(
                f"{self.where}: gave up before {what}: the state ran past its time limit "
                f"(InterfaceTimeoutSeconds)"
            )
        try:
            self.bus.i2c_rdwr(message)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            name = errno.errorcode.get(exc.errno or 0, "")
            hint = ""
            if exc.errno == errno.ETIMEDOUT and what.endswith(STRETCHING):
                hint = (
                    "; the bootloader held the clock longer than the I2C adapter allows: "
                    "bootloader v1.1 and later offer no-stretch commands that avoid this"
                )
            raise NoAnswer(
                f"{self.where}: {what}: I2C transfer failed: {reason}"
                f"{f' ({name})' if name else ''}{hint}"
            ) from exc

    def _send(self, data: bytes, what: str) -> None:
        self._transfer(i2c_msg.write(self.settings.address, data), what)

    def _receive(self, length: int, what: str) -> bytes:
        message = i2c_msg.read(self.settings.address, length)
        self._transfer(message, what)
        return bytes(message)

    def _expect_ack(self, what: str, *, no_stretch: bool = False) -> None:
        """Read the one-byte answer; with ``no_stretch``, poll while it says BUSY."""
        give_up = time.monotonic() + self.settings.busy_timeout  # _transfer enforces the deadline
        pause = 0.0002  # short operations (a 256-byte write) take a few milliseconds
        while True:
            answer = self._receive(1, what)[0]
            if answer == ACK:
                return
            if answer == NACK:
                raise Nacked(f"{self.where}: {what}: the bootloader answered NACK")
            if answer != BUSY or not no_stretch:
                expected = (
                    "ACK 0x79, NACK 0x1F or BUSY 0x76" if no_stretch else "ACK 0x79 or NACK 0x1F"
                )
                raise NotBootloader(
                    f"{self.where}: {what}: unexpected answer 0x{answer:02x} (expected {expected})"
                )
            if time.monotonic() >= give_up:
                raise BootloaderError(
                    f"{self.where}: {what}: still BUSY after {self.settings.busy_timeout:g} s "
                    f"(--busy-timeout)"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.002)  # a poll costs ~50 us of a 400 kHz bus

    def _command(self, code: int, what: str) -> None:
        self._send(command_frame(code), what)
        self._expect_ack(what)

    # ------------------------------------------------------------------ commands

    def connect(self) -> None:
        """Get Version and Get: learn the protocol version and pick the commands to use."""
        what = "Get Version (0x01)"
        self._command(Command.GET_VERSION, what)
        self.version = self._receive(1, what)[0]
        self._expect_ack(what)
        # An I2C read has a fixed length, so Get's reply is read at the length this version's
        # list has (the newest known for a newer version); a part whose ROM lists another
        # number of commands is met again at the length its reply announced.
        newest = COMMANDS_BY_VERSION[max(COMMANDS_BY_VERSION)]
        known = COMMANDS_BY_VERSION.get(self.version, newest)
        announced = self._get(len(known))
        if announced != len(known):
            self._resync()
            if announced is None:  # the reply was shorter than read: learn its length first
                announced = self._get(0)
                self._resync()
            if announced is None or announced != self._get(announced):
                raise NotBootloader(
                    f"{self.where}: Get (0x00): the length of the reply changes between tries"
                )
        self._select_commands()

    def _get(self, commands: int) -> int | None:
        """Get, reading a reply of ``commands`` commands; the number the reply announces
        (``None`` when it was shorter than that). The list is kept when the lengths agree."""
        what = "Get (0x00)"
        self._command(Command.GET, what)
        try:
            frame = self._receive(max(commands + 2, 1), what)
        except NoAnswer:
            return None
        announced = frame[0]  # N: the bytes that follow, less one (the version + the list)
        if announced != commands:
            return announced
        if frame[1] != self.version:
            raise NotBootloader(
                f"{self.where}: {what}: reply names version 0x{frame[1]:02x}, Get Version "
                f"said 0x{self.version:02x}: {frame.hex()}"
            )
        self._expect_ack(what)
        self.commands = tuple(frame[2:])
        return announced

    def _resync(self) -> None:
        """Bring the conversation back in step after a reply of unexpected length: send an
        invalid command until the bootloader NACKs it (what it answers when it waits for a
        command), discarding whatever it still had to send."""
        for _ in range(RESYNC_TRIES):
            try:
                self._send(bytes((0xFF, 0xFF)), "resynchronisation (an invalid command)")
                if self._receive(1, "resynchronisation (an invalid command)")[0] == NACK:
                    return
            except NoAnswer:
                continue
        raise NotBootloader(
            f"{self.where}: Get (0x00): reply of unexpected length, and the bootloader did not "
            f"answer NACK to an invalid command after {RESYNC_TRIES} tries"
        )

    def _select_commands(self) -> None:
        listed = set(self.commands)
        missing = [c for c in (Command.GET_ID, Command.READ_MEMORY, Command.GO) if c not in listed]
        if missing:
            raise BootloaderError(
                f"{self.where}: the bootloader does not offer "
                f"{', '.join(f'0x{c:02x}' for c in missing)}; cannot update it"
            )
        mode = self.settings.no_stretch
        pairs = (
            (Command.NO_STRETCH_WRITE_MEMORY, Command.WRITE_MEMORY),
            (Command.NO_STRETCH_ERASE, Command.ERASE),
        )
        chosen = []
        for no_stretch, stretching in pairs:
            if mode != "no" and no_stretch in listed:
                chosen.append(no_stretch)
            elif mode == "yes":
                raise BootloaderError(
                    f"{self.where}: --no-stretch=yes but bootloader v{self.version >> 4}."
                    f"{self.version & 0xF} does not offer command 0x{no_stretch:02x}"
                )
            elif stretching in listed:
                chosen.append(stretching)
            else:
                raise BootloaderError(
                    f"{self.where}: the bootloader offers neither 0x{no_stretch:02x} nor "
                    f"0x{stretching:02x}; cannot update it"
                )
        self.write_command, self.erase_command = chosen

    @property
    def version_text(self) -> str:
        return f"{self.version >> 4}.{self.version & 0xF}"

    def get_id(self) -> int:
        what = "Get ID (0x02)"
        self._command(Command.GET_ID, what)
        frame = self._receive(3, what)
        if frame[0] != 1:
            raise BootloaderError(
                f"{self.where}: {what}: reply announces {frame[0] + 1} bytes, expected 2"
            )
        self._expect_ack(what)
        return (frame[1] << 8) | frame[2]

    def read_memory(self, address: int, length: int) -> bytes:
        """Read ``length`` bytes, 256 at a time."""
        out = bytearray()
        while len(out) < length:
            at = address + len(out)
            size = min(MAX_TRANSFER, length - len(out))
            what = f"Read Memory (0x11) of {size} bytes at 0x{at:08x}"
            self._command(Command.READ_MEMORY, what)
            self._send(address_frame(at), what)
            try:
                self._expect_ack(what)
            except Nacked as exc:
                raise Nacked(f"{exc.message}{ADDRESS_REFUSED}") from None
            self._send(command_frame(size - 1), what)
            self._expect_ack(what)
            out += self._receive(size, what)
        return bytes(out)

    def write_memory(self, address: int, data: bytes) -> None:
        """Write up to 256 bytes at a word-aligned address (padded with 0xFF to whole words)."""
        if address % 4 or not 0 < len(data) <= MAX_TRANSFER:
            raise ValueError("write_memory needs a word-aligned address and 1..256 bytes")
        block = data + b"\xff" * (-len(data) % 4)
        no_stretch = self.write_command == Command.NO_STRETCH_WRITE_MEMORY
        what = (
            f"Write Memory (0x{self.write_command:02x}) of {len(block)} bytes at 0x{address:08x}"
            f"{'' if no_stretch else ' ' + STRETCHING}"
        )
        self._command(self.write_command, what)
        self._send(address_frame(address), what)
        self._expect_ack(what)
        frame = bytes((len(block) - 1,)) + block
        self._send(frame + bytes((xor(frame),)), what)
        try:
            self._expect_ack(what, no_stretch=no_stretch)
        except Nacked as exc:
            raise Nacked(f"{exc.message}{PAGE_REFUSED}") from None

    def erase_pages(self, pages: Sequence[int]) -> None:
        no_stretch = self.erase_command == Command.NO_STRETCH_ERASE
        batch = ERASE_BATCH if no_stretch else 1
        for start in range(0, len(pages), batch):
            group = pages[start : start + batch]
            what = (
                f"Erase (0x{self.erase_command:02x}) of page(s) {', '.join(map(str, group))}"
                f"{'' if no_stretch else ' ' + STRETCHING}"
            )
            self._command(self.erase_command, what)
            count = (len(group) - 1).to_bytes(2, "big")
            self._send(count + bytes((xor(count),)), what)
            self._expect_ack(what)
            numbers = b"".join(page.to_bytes(2, "big") for page in group)
            self._send(numbers + bytes((xor(numbers),)), what)
            try:
                self._expect_ack(what, no_stretch=no_stretch)
            except Nacked as exc:
                raise Nacked(f"{exc.message}{PAGE_REFUSED}") from None

    def go(self, address: int) -> None:
        what = f"Go (0x21) to 0x{address:08x}"
        self._command(Command.GO, what)
        self._send(address_frame(address), what)
        self._expect_ack(what)

    @property
    def has_checksum(self) -> bool:
        return Command.NO_STRETCH_GET_CHECKSUM in self.commands

    def get_checksum(self, address: int, length: int) -> int:
        """Get Checksum (0xA1, bootloader v1.2): the CRC of ``length`` bytes (a multiple of 4)
        at ``address``, computed by the MCU, so the image need not cross the bus again."""
        what = f"Get Checksum (0xa1) of {length} bytes at 0x{address:08x}"
        self._command(Command.NO_STRETCH_GET_CHECKSUM, what)
        self._send(address_frame(address), what)
        self._expect_ack(what)
        raw = length.to_bytes(4, "big")
        self._send(raw + bytes((xor(raw),)), what)
        self._expect_ack(what)
        self._expect_ack(what, no_stretch=True)  # BUSY while the CRC unit runs
        frame = self._receive(5, what)
        if xor(frame[:4]) != frame[4]:
            raise BootloaderError(f"{self.where}: {what}: reply fails its checksum: {frame.hex()}")
        return int.from_bytes(frame[:4], "big")

    def read_protected(self) -> bool:
        """Is readout protection on? Under level 1 the bootloader NACKs every Read Memory,
        even of the flash's first word (which any unprotected part lets it read)."""
        what = f"Read Memory (0x11) of 4 bytes at 0x{self.settings.flash_base:08x}"
        try:
            self._command(Command.READ_MEMORY, what)  # refused here, or at the address
            self._send(address_frame(self.settings.flash_base), what)
            self._expect_ack(what)
        except Nacked:
            return True
        self._send(command_frame(3), what)
        self._expect_ack(what)
        self._receive(4, what)
        return False

    def change_option_bytes(self, stretching: int, no_stretch: int, what: str) -> None:
        """Readout Protect/Unprotect or Write Unprotect: two ACKs, then the MCU resets itself
        (the caller reconnects). Readout Unprotect mass-erases the flash before its second
        ACK, which is why it may take seconds."""
        use_no_stretch = no_stretch in self.commands
        code = no_stretch if use_no_stretch else stretching
        what = f"{what} (0x{code:02x}){'' if use_no_stretch else ' ' + STRETCHING}"
        self._command(code, what)
        self._expect_ack(what, no_stretch=use_no_stretch)
