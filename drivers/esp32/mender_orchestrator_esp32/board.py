"""The board around a simulated chip: its USB-UART bridge's DTR and RTS through the usual
auto-reset circuit, reached over RFC 2217 (a serial port on TCP, which carries those lines; a
pty does not).

The circuit (two transistors, as on most ESP32 boards): EN is pulled low while RTS is asserted
and DTR is not; GPIO0 (the boot strap) while DTR is asserted and RTS is not; with both or
neither asserted both float high. EN has a capacitor, so the chip leaves reset
``EN_RISE_SECONDS`` after EN is released, and samples GPIO0 then: low, the ROM's download
mode; high, the second-stage bootloader and the app.

RFC 2217 cannot carry the timing of a reset: each line change is a round trip (pyserial's
client waits 50 ms or more for each), so the instant of a sequence where both lines are
asserted would last long enough to start the app. The port server therefore does what
esptool's own ``esp_rfc2217_server`` does: it recognises the start of esptool's two sequences
and plays each on the lines itself, with the chip's timing (``ResetPlayingPortManager``).
"""

from __future__ import annotations

import bisect
import queue
import threading
import time
from typing import Any

import serial.rfc2217
from serial.rfc2217 import (
    COM_PORT_OPTION,
    SERVER_SET_CONTROL,
    SET_CONTROL,
    SET_CONTROL_DTR_OFF,
    SET_CONTROL_DTR_ON,
    SET_CONTROL_RTS_OFF,
    SET_CONTROL_RTS_ON,
)

EN_RISE_SECONDS = 0.005  # EN's RC (10 kOhm, 0.47 uF) to the chip's threshold
HOLD_SECONDS = 0.1  # EN held low, as esptool holds it
STRAP_SECONDS = 0.05  # GPIO0 held low after EN is released, as esptool holds it


class AutoResetBoard:
    """The bridge's port settings and control lines, and the chip's EN and GPIO0; each start
    of the chip goes to ``starts`` (``"download"`` or ``"app"``) for the simulator to act on."""

    def __init__(self) -> None:
        self.baudrate = 115200
        self.bytesize = 8
        self.parity = "N"
        self.stopbits = 1
        self.xonxoff = False
        self.rtscts = False
        self.break_condition = False
        # the bridge's inputs, reported to the client: none is wired on this board
        self.cts = self.dsr = self.ri = self.cd = False
        self.starts: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._dtr = False
        self._rts = False
        self._en_low = False
        self._gpio0: list[tuple[float, bool]] = [(0.0, False)]  # (since, low), for sampling
        self._release: threading.Timer | None = None
        self._playing = threading.Lock()  # one sequence at a time, as one bridge plays them

    @property
    def dtr(self) -> bool:
        return self._dtr

    @dtr.setter
    def dtr(self, value: bool) -> None:
        self.set_lines(bool(value), self._rts)

    @property
    def rts(self) -> bool:
        return self._rts

    @rts.setter
    def rts(self, value: bool) -> None:
        self.set_lines(self._dtr, bool(value))

    def set_lines(self, dtr: bool, rts: bool) -> None:
        """Both lines at once (a bridge's TIOCMSET), and what the circuit does with them."""
        with self._lock:
            self._dtr, self._rts = dtr, rts
            now = time.monotonic()
            gpio0_low = dtr and not rts
            if gpio0_low != self._gpio0[-1][1]:
                self._gpio0.append((now, gpio0_low))
            en_low = rts and not dtr
            if en_low and self._release is not None:
                self._release.cancel()  # pulled low again before the chip started
                self._release = None
            elif not en_low and self._en_low:
                self._release = threading.Timer(EN_RISE_SECONDS, self._start, (now,))
                self._release.daemon = True
                self._release.start()
            self._en_low = en_low

    def _start(self, released: float) -> None:
        with self._lock:
            self._release = None
            at = released + EN_RISE_SECONDS
            # GPIO0 as it was when EN crossed the threshold, however late this timer ran
            index = bisect.bisect_right([since for since, _ in self._gpio0], at) - 1
            low = self._gpio0[index][1]
            self._gpio0 = self._gpio0[-1:]
        self.starts.put("download" if low else "app")

    def play(self, sequence: list[tuple[bool, bool, float]]) -> None:
        """Set the lines to each (DTR, RTS) in turn, holding each the given seconds."""
        with self._playing:
            for dtr, rts, hold in sequence:
                self.set_lines(dtr, rts)
                time.sleep(hold)

    # what pyserial's PortManager calls on a purge request: no buffers here
    def reset_input_buffer(self) -> None:
        pass

    def reset_output_buffer(self) -> None:
        pass


# esptool's two sequences as (DTR, RTS, hold): into the download mode (EN low, then released
# with GPIO0 low, then GPIO0 released), and the hard reset (EN pulsed, GPIO0 high)
DOWNLOAD_RESET = [
    (False, True, HOLD_SECONDS), (True, False, STRAP_SECONDS), (False, False, 0.0)
]  # fmt: skip
HARD_RESET = [(False, True, HOLD_SECONDS), (False, False, 0.0)]


class ResetPlayingPortManager(serial.rfc2217.PortManager):  # type: ignore[misc]
    """pyserial's RFC 2217 port server for an ``AutoResetBoard``, which plays esptool's reset
    sequences on the board's lines when it sees them start, as ``esp_rfc2217_server`` does: DTR
    asserted starts the reset into the download mode, RTS released (outside that sequence) the
    hard reset; the rest of either sequence is answered but not passed on."""

    def __init__(self, board: AutoResetBoard, connection: Any) -> None:
        super().__init__(board, connection)
        self.board = board
        self._in_download_sequence = False

    def _telnet_process_subnegotiation(self, suboption: bytes) -> None:
        if suboption[0:1] != COM_PORT_OPTION or suboption[1:2] != SET_CONTROL:
            super()._telnet_process_subnegotiation(suboption)
            return
        control = suboption[2:3]
        if control not in (SET_CONTROL_DTR_ON, SET_CONTROL_DTR_OFF, SET_CONTROL_RTS_ON,
                           SET_CONTROL_RTS_OFF):  # fmt: skip
            super()._telnet_process_subnegotiation(suboption)  # break, flow control...
            return
        sequence = None
        if control == SET_CONTROL_DTR_OFF:
            self._in_download_sequence = False
        elif control == SET_CONTROL_DTR_ON and not self._in_download_sequence:
            self._in_download_sequence = True
            sequence = DOWNLOAD_RESET
        elif control == SET_CONTROL_RTS_OFF and not self._in_download_sequence:
            sequence = HARD_RESET
        if sequence is not None:
            threading.Thread(target=self.board.play, args=(sequence,), daemon=True).start()
        # acknowledged as asked, so that a client that waits for the answer goes on
        self.rfc2217_send_subnegotiation(SERVER_SET_CONTROL, control)
