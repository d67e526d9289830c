"""How long a CAN frame occupies the bus: shared by the bus-load cap, the simulator's paced bus
and the benchmark's computed limits, so all three count the same bits.

Lengths follow ISO 11898-1 frame formats. Bit stuffing depends on the data; ``STUFFING`` is
the typical share of the stuffable bits (worst case is one in four), which gives the usual
figure of about 28 KiB/s for ISO-TP consecutive frames on classic CAN at 500 kbit/s.
"""

from __future__ import annotations

STUFFING = 0.10  # typical stuff bits per stuffable bit (random data; worst case 0.25)
_CLASSIC_HEAD = {False: 34, True: 54}  # SOF, identifier(s), control, CRC: stuffed with the data
_CLASSIC_TAIL = 13  # CRC delimiter, ACK slot and delimiter, end of frame, intermission
_FD_ARBITRATION = {False: 17, True: 37}  # SOF up to BRS, at the nominal bit rate
_FD_TAIL = 13
FD_LENGTHS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64)


def fd_length(size: int) -> int:
    """The CAN FD payload length (a DLC step) carrying ``size`` bytes."""
    return next(length for length in FD_LENGTHS if length >= size)


def frame_seconds(
    size: int,
    *,
    extended: bool = False,
    fd: bool = False,
    brs: bool = False,
    bitrate: int,
    data_bitrate: int | None = None,
) -> float:
    """Seconds a data frame with ``size`` payload bytes takes on the bus, intermission included."""
    if not fd:
        stuffed = _CLASSIC_HEAD[extended] + 8 * size
        return (stuffed * (1 + STUFFING) + _CLASSIC_TAIL) / bitrate
    length = fd_length(size)
    crc = 17 if length <= 16 else 21
    # ESI, DLC, data, stuff count, CRC (with its fixed stuff bits), CRC delimiter
    data_bits = (1 + 4 + 8 * length) * (1 + STUFFING) + 4 + crc + (crc + 4) // 4 + 1
    nominal_bits = _FD_ARBITRATION[extended] * (1 + STUFFING) + _FD_TAIL
    fast = data_bitrate if brs and data_bitrate else bitrate
    return nominal_bits / bitrate + data_bits / fast


def isotp_limit(*, fd: bool, bitrate: int, data_bitrate: int | None = None) -> float:
    """Bytes per second ISO-TP consecutive frames carry back to back (normal addressing,
    block size 0, STmin 0): the ceiling of any flash over this link."""
    if fd:
        per_frame = 63  # 64-byte frames, one PCI byte
        seconds = frame_seconds(64, fd=True, brs=data_bitrate is not None, bitrate=bitrate,
                                data_bitrate=data_bitrate)  # fmt: skip
    else:
        per_frame = 7
        seconds = frame_seconds(8, bitrate=bitrate)
    return per_frame / seconds
