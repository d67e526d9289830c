"""The documented default SecurityAccess key algorithm, shared with the ECU simulator.

It protects nothing (it is published here); it exists so the simulator can demand a real
seed/key exchange and a vendor can see what their ``canbus_security_key`` plugin replaces.

For a seed ``s`` of ``n`` bytes and the 4-byte constant ``K = b"MORC"``, key byte ``i`` is::

    key[i] = rotl8(s[i] XOR K[i mod 4], 3) XOR (i mod 256)

where ``rotl8`` rotates an 8-bit value left. The key has the seed's length. Level 0x01 uses
``K`` itself; any other level ``L`` uses ``K`` with ``L`` added to each byte (mod 256), so each
level has its own key.
"""

from __future__ import annotations

SIMULATOR_SECRET = b"MORC"


def _rotl8(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (8 - bits))) & 0xFF


def level_secret(level: int, secret: bytes = SIMULATOR_SECRET) -> bytes:
    """The constant of SecurityAccess ``level``."""
    return secret if level == 1 else bytes((byte + level) & 0xFF for byte in secret)


def simulator_key(seed: bytes, secret: bytes = SIMULATOR_SECRET, *, level: int = 1) -> bytes:
    """The key the simulator expects for ``seed`` at ``level`` (``secret`` differs only to
    fake a wrong one)."""
    secret = level_secret(level, secret)
    return bytes(
        _rotl8(byte ^ secret[i % len(secret)], 3) ^ (i & 0xFF) for i, byte in enumerate(seed)
    )
