"""Byte values of the STM32 system-bootloader I2C protocol (ST application note AN4221).

Shared by the driver's client and the simulator: only the numbers the note defines live here,
so the two sides implement the protocol's behaviour independently of each other.
"""

from __future__ import annotations

import enum
import zlib
from functools import reduce

ACK = 0x79
NACK = 0x1F
BUSY = 0x76  # answered by the no-stretch commands while the operation is still running

MAX_TRANSFER = 256  # bytes per Read Memory / Write Memory
MASS_ERASE = 0xFFFF  # special "number of pages" of Erase: the whole flash


class Command(enum.IntEnum):
    GET = 0x00
    GET_VERSION = 0x01
    GET_ID = 0x02
    READ_MEMORY = 0x11
    GO = 0x21
    WRITE_MEMORY = 0x31
    NO_STRETCH_WRITE_MEMORY = 0x32
    ERASE = 0x44
    NO_STRETCH_ERASE = 0x45
    WRITE_PROTECT = 0x63
    NO_STRETCH_WRITE_PROTECT = 0x64
    WRITE_UNPROTECT = 0x73
    NO_STRETCH_WRITE_UNPROTECT = 0x74
    READOUT_PROTECT = 0x82
    NO_STRETCH_READOUT_PROTECT = 0x83
    READOUT_UNPROTECT = 0x92
    NO_STRETCH_READOUT_UNPROTECT = 0x93
    NO_STRETCH_GET_CHECKSUM = 0xA1


# What ``Get`` lists, per bootloader protocol version: v1.0 has only clock-stretching
# commands, v1.1 added the no-stretch forms, v1.2 the Get Checksum command (AN4221,
# "bootloader protocol version evolution"). The I2C read of Get's reply has a fixed length,
# so the host must know how many commands to expect before it asks.
_V10 = (0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x44, 0x63, 0x73, 0x82, 0x92)
_V11 = (*_V10[:6], 0x32, 0x44, 0x45, 0x63, 0x64, 0x73, 0x74, 0x82, 0x83, 0x92, 0x93)
COMMANDS_BY_VERSION: dict[int, tuple[int, ...]] = {
    0x10: _V10,
    0x11: _V11,
    # as a v1.2 ROM lists them: v1.0's, then the no-stretch forms, then Get Checksum
    0x12: (*_V10, 0x32, 0x45, 0x64, 0x74, 0x83, 0x93, 0xA1),
}

# Get Checksum's CRC: the STM32 CRC unit's reset configuration (CRC-32/MPEG-2 over
# little-endian 32-bit words: polynomial 0x04C11DB7, initial value 0xFFFFFFFF, no reflection,
# no final XOR). On I2C the command takes only the address and the length: unlike the USART
# and SPI forms, the host cannot choose another polynomial or initial value.
CRC_POLYNOMIAL = 0x04C1_1DB7
CRC_INITIAL = 0xFFFF_FFFF


def xor(data: bytes) -> int:
    """The protocol's checksum: all bytes XORed together."""
    return reduce(lambda acc, byte: acc ^ byte, data, 0)


def command_frame(code: int) -> bytes:
    """A command as sent on the wire: the code and its complement."""
    return bytes((code, code ^ 0xFF))


def address_frame(address: int) -> bytes:
    """A 32-bit address, MSB first, followed by its checksum."""
    raw = address.to_bytes(4, "big")
    return raw + bytes((xor(raw),))


_REVERSED_BITS = bytes(int(f"{byte:08b}"[::-1], 2) for byte in range(256))


def stm32_crc(data: bytes) -> int:
    """The CRC the bootloader's Get Checksum answers for ``data`` (a multiple of 4 bytes).

    Computed with zlib: CRC-32/MPEG-2 is zlib's CRC-32 seen in a mirror (every input byte and
    the result bit-reversed, no final XOR), and each word feeds its most significant byte first.
    """
    words = bytearray(data)
    for offset in range(0, len(words), 4):
        words[offset : offset + 4] = words[offset : offset + 4][::-1]
    mirrored = zlib.crc32(bytes(words).translate(_REVERSED_BITS)) ^ 0xFFFF_FFFF
    return int(f"{mirrored:032b}"[::-1], 2)
