"""SLIP framing (RFC 1055) as the ESP ROM serial loader uses it: 0xC0 ends and starts a frame,
0xDB 0xDC stands for 0xC0 and 0xDB 0xDD for 0xDB inside one."""

from __future__ import annotations


def encode(packet: bytes) -> bytes:
    return b"\xc0" + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


class Decoder:
    """Feeds bytes in, gives complete frames out; bytes outside a frame are counted as noise."""

    def __init__(self) -> None:
        self._frame: bytearray | None = None  # raw (still escaped) bytes of an open frame
        self.noise = 0

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        at = 0
        while at < len(data):
            if self._frame is None:
                start = data.find(b"\xc0", at)
                if start < 0:
                    self.noise += len(data) - at
                    break
                self.noise += start - at
                self._frame = bytearray()
                at = start + 1
                continue
            end = data.find(b"\xc0", at)
            if end < 0:
                self._frame += data[at:]
                break
            self._frame += data[at:end]
            at = end + 1
            if self._frame:
                frames.append(_unescape(bytes(self._frame)))
                self._frame = None
            # an empty frame is two delimiters in a row: the second one opens the next
        return frames


def _unescape(raw: bytes) -> bytes:
    # every 0xDB starts a pair, so 0xDB 0xDC can only be a pair: replacing it first is safe
    return raw.replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb")
