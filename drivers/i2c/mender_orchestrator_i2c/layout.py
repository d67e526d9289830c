"""The managed area as erase units: uniform pages, or a part's sectors of different sizes.

Units are numbered as the bootloader's Erase numbers them: from 0 at the start of the flash,
which need not be the start of the managed area.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mender_orchestrator_i2c.families import Family
from mender_orchestrator_i2c.settings import Settings


@dataclass(frozen=True)
class Unit:
    number: int  # as Erase names it
    offset: int  # from the start of the managed area
    size: int


@dataclass(frozen=True)
class Layout:
    base: int
    units: tuple[Unit, ...]
    record: Unit  # the unit holding the version record, last of the area's or as configured

    @property
    def size(self) -> int:
        return sum(unit.size for unit in self.units)

    @property
    def image_limit(self) -> int:
        """Bytes available to the image: from the area's start up to the version record."""
        return self.record.offset

    @property
    def first(self) -> Unit:
        """The unit holding the vector table."""
        return self.units[0]

    def in_bank(self, bank: int, family: Family) -> Layout:
        """The same area in ``bank`` (1 or 2) of a dual-bank part: bank 2's copy starts a bank
        further on, its units numbered on from bank 1's last, as the bootloader's Erase
        numbers them."""
        if bank == 1:
            return self
        sizes = family.unit_sizes()
        per_bank = sum(1 for i in range(len(sizes)) if sum(sizes[:i]) < family.bank_size)

        def moved(unit: Unit) -> Unit:
            return replace(unit, number=unit.number + per_bank)

        return Layout(
            self.base + family.bank_size, tuple(map(moved, self.units)), moved(self.record)
        )

    def extent(self, length: int) -> list[Unit]:
        """The units that ``length`` bytes from the area's start touch."""
        return [unit for unit in self.units if unit.offset < length]


class LayoutError(ValueError):
    """The configured area does not fit the part; the message says which argument."""


def uniform(settings: Settings) -> Layout:
    """``--page-size`` pages over ``--flash-base``/``--flash-size`` (checked by the settings)."""
    page = settings.page_size
    first = 0  # pages are numbered from the area's start, as before the family table
    units = tuple(Unit(first + i, i * page, page) for i in range(settings.flash_size // page))
    return Layout(settings.flash_base, units, _unit_at(units, settings.image_limit))


def for_family(settings: Settings, family: Family) -> Layout:
    """The area's units on ``family``'s flash; ``LayoutError`` if it does not fit them."""
    s = settings
    start = s.flash_base - family.flash_base
    if start < 0 or start + s.flash_size > family.flash_size:
        raise LayoutError(
            f"--flash-base=0x{s.flash_base:08x} --flash-size={s.flash_size}: the area must lie "
            f"inside the {family.name}'s flash (0x{family.flash_base:08x}, "
            f"{family.flash_size // 1024} KiB)"
        )
    units = []
    offset = 0
    for number, size in enumerate(family.unit_sizes()):
        if start <= offset < start + s.flash_size:
            units.append(Unit(number, offset - start, size))
        offset += size
    bounds = {unit.offset for unit in units} | {units[-1].offset + units[-1].size if units else 0}
    if not units or units[0].offset != 0 or s.flash_size not in bounds:
        raise LayoutError(
            f"--flash-base=0x{s.flash_base:08x} --flash-size={s.flash_size}: the area must "
            f"start and end on the {family.name}'s erase-unit bounds ({describe(family)})"
        )
    record = s.version_record - s.flash_base
    if not s.version_record_given:
        record = units[-1].offset  # the area's last unit
    if record not in {unit.offset for unit in units[1:]}:
        raise LayoutError(
            f"--version-record=0x{s.flash_base + record:08x}: expected the start of one of "
            f"the area's erase units after the first, on the {family.name}: "
            + ", ".join(f"0x{s.flash_base + unit.offset:08x}" for unit in units[1:])
        )
    return Layout(s.flash_base, tuple(units), _unit_at(tuple(units), record))


def _unit_at(units: tuple[Unit, ...], offset: int) -> Unit:
    return next(unit for unit in units if unit.offset == offset)


def describe(family: Family) -> str:
    return ", ".join(f"{count} x {size // 1024} KiB" for count, size in family.erase_units)
