"""SLIP framing (RFC 1055) as the ESP ROM serial loader uses it: 0xC0 ends and starts a frame,
0xDB 0xDC stands for 0xC0 and 0xDB 0xDD for 0xDB inside one."""

from __future__ import annotations

END = 0xC0
ESC = 0xDB
ESC_END = 0xDC
ESC_ESC = 0xDD


def encode(packet: bytes) -> bytes:
    return b"\xc0" + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


class Decoder:
    """Feeds bytes in, gives complete frames out; bytes outside a frame are counted as noise."""

    def __init__(self) -> None:
        self._frame: bytearray | None = None
        self._escaped = False
        self.noise = 0

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        for byte in data:
            if self._frame is None:
                if byte == END:
                    self._frame = bytearray()
                else:
                    self.noise += 1
            elif self._escaped:
                self._escaped = False
                self._frame.append(END if byte == ESC_END else ESC if byte == ESC_ESC else byte)
            elif byte == ESC:
                self._escaped = True
            elif byte == END:
                if self._frame:
                    frames.append(bytes(self._frame))
                    self._frame = None
                # an empty frame is two delimiters in a row: the second one opens the next
            else:
                self._frame.append(byte)
        return frames
