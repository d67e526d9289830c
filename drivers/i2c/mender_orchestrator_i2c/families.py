"""What the driver knows about STM32 parts, keyed by the product ID that Get ID answers.

Each entry: where the main flash starts, how big it is, and how it divides into erase units,
as the reference manual of the line describes it. Most lines have uniform pages; the
F2/F4/F7 lines have sectors of different sizes (16 KiB ... 256 KiB), which the bootloader's
Erase numbers from 0 at the flash base like pages. Dual-bank parts list both banks, numbered
on from the first bank's last sector, as the bootloader numbers them.

A part missing here is driven with ``--page-size`` (default 2 KiB), as before.
"""

from __future__ import annotations

from dataclasses import dataclass

K = 1024
# the F2/F4 sector map of one 1 MiB bank: four 16 KiB, one 64 KiB, then 128 KiB sectors
_F4_BANK = ((4, 16 * K), (1, 64 * K), (7, 128 * K))


@dataclass(frozen=True)
class BankSwap:
    """The option bit that makes a dual-bank part boot its second bank, and where the system
    bootloader's Write Memory reaches it: the user option word, followed by its complement
    (the 64-bit option double word of the L4/G4 lines, RM0351/RM0440 "FLASH_OPTR")."""

    option_address: int
    bit: int
    name: str

    @property
    def mask(self) -> int:
        return 1 << self.bit


# L47x/48x and G47x/48x: FLASH_OPTR at 0x1FFF7800, BFB2 = bit 20. With BFB2 set, a reset
# from flash runs the system bootloader's dual-bank check, which maps bank 2 at the flash base
# (bank 1 after it) when bank 2 holds a valid vector table: an image is linked for the flash
# base whichever bank holds it. The bootloader entered through BOOT0 leaves the map as it is
# physically: bank 1 at the flash base, bank 2 after it.
_BFB2 = BankSwap(0x1FFF_7800, 20, "BFB2")


@dataclass(frozen=True)
class Family:
    name: str
    flash_size: int
    erase_units: tuple[tuple[int, int], ...]  # runs of (count, size) from the flash base
    uid_address: int | None = None
    banks: int = 1
    # the option bit that swaps the bank the MCU boots (--bank-swap=yes), for the parts whose
    # mechanism the driver implements (see BankSwap)
    bank_swap: BankSwap | None = None
    flash_base: int = 0x0800_0000
    note: str = ""  # a quirk the user should know about

    @property
    def bank_size(self) -> int:
        return self.flash_size // self.banks

    @property
    def uniform(self) -> int | None:
        """The page size if every erase unit has the same size, else ``None``."""
        sizes = {size for _, size in self.erase_units}
        return sizes.pop() if len(sizes) == 1 else None

    def unit_sizes(self) -> list[int]:
        return [size for count, size in self.erase_units for _ in range(count)]


def _pages(flash: int, page: int) -> tuple[tuple[int, int], ...]:
    return ((flash // page, page),)


_UID_F0_F3 = 0x1FFF_F7AC
_UID_F2_F4 = 0x1FFF_7A10
_UID_F7 = 0x1FF0_F420
_UID_G_L4 = 0x1FFF_7590

FAMILIES: dict[int, Family] = {
    0x440: Family("STM32F030x8/F05x", 64 * K, _pages(64 * K, 1 * K), _UID_F0_F3),
    0x448: Family("STM32F07x", 128 * K, _pages(128 * K, 2 * K), _UID_F0_F3),
    0x422: Family("STM32F30x/F31x", 256 * K, _pages(256 * K, 2 * K), _UID_F0_F3),
    0x411: Family("STM32F2xx", 1024 * K, _F4_BANK, _UID_F2_F4),
    0x413: Family("STM32F405/407/415/417", 1024 * K, _F4_BANK, _UID_F2_F4),
    0x419: Family(
        "STM32F42x/43x",
        2048 * K,
        _F4_BANK + _F4_BANK,
        _UID_F2_F4,
        banks=2,
        note="a 1 MiB part (DB1M set) has a different map; this table is the 2 MiB one. Its "
        "BFB2 boots bank 2 through the bootloader without the L4's remap: --bank-swap is not "
        "offered",
    ),
    0x423: Family("STM32F401xB/C", 256 * K, ((4, 16 * K), (1, 64 * K), (1, 128 * K)), _UID_F2_F4),
    0x433: Family("STM32F401xD/E", 512 * K, ((4, 16 * K), (1, 64 * K), (3, 128 * K)), _UID_F2_F4),
    0x431: Family("STM32F411", 512 * K, ((4, 16 * K), (1, 64 * K), (3, 128 * K)), _UID_F2_F4),
    0x421: Family("STM32F446", 512 * K, ((4, 16 * K), (1, 64 * K), (3, 128 * K)), _UID_F2_F4),
    0x449: Family("STM32F74x/75x", 1024 * K, ((4, 32 * K), (1, 128 * K), (3, 256 * K)), _UID_F7),
    0x451: Family(
        "STM32F76x/77x",
        2048 * K,
        ((4, 32 * K), (1, 128 * K), (7, 256 * K)),
        _UID_F7,
        note="single-bank mode (nDBANK set); in dual-bank mode the sectors are half as big",
    ),
    0x460: Family("STM32G07x/08x", 128 * K, _pages(128 * K, 2 * K), _UID_G_L4),
    0x466: Family("STM32G03x/04x", 64 * K, _pages(64 * K, 2 * K), _UID_G_L4),
    0x467: Family(
        "STM32G0B/C",
        512 * K,
        _pages(512 * K, 2 * K),
        _UID_G_L4,
        banks=2,
        note="its nSWAP_BANK option bit has the opposite sense to BFB2 and is not driven: "
        "--bank-swap is not offered",
    ),
    0x468: Family("STM32G431/441", 128 * K, _pages(128 * K, 2 * K), _UID_G_L4),
    0x469: Family(
        "STM32G47x/48x",
        512 * K,
        _pages(512 * K, 2 * K),
        _UID_G_L4,
        banks=2,
        bank_swap=_BFB2,
        note="dual-bank mode (DBANK set, 2 KiB pages); single-bank mode has 4 KiB pages",
    ),
    0x415: Family(
        "STM32L47x/48x", 1024 * K, _pages(1024 * K, 2 * K), _UID_G_L4, banks=2, bank_swap=_BFB2
    ),
    0x435: Family("STM32L43x/44x", 256 * K, _pages(256 * K, 2 * K), _UID_G_L4),
}
