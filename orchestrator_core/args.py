"""One way for drivers to declare and parse their ``interface_args``: argparse underneath.

A driver builds one ``InterfaceArgs`` parser (``add_argument`` as with argparse), exposes it
as the attribute ``interface_args_parser`` of its factory, so that
``mender-orchestrator drivers NAME`` can show its ``--help``-style text, and parses each
Component's arguments with ``parser.parse(component)``::

    PARSER = InterfaceArgs("seat-heater", description="...")
    PARSER.add_argument("--device", required=True, type=absolute_path, help="...")

    class SeatHeaterDriver:
        interface_args_parser = PARSER

        def __init__(self, component: Component) -> None:
            self.args = PARSER.parse(component)

Unlike plain argparse it never prints nor exits: every problem is a ``ConfigError`` naming
the Component and the argument (a missing required option with its help text, an unknown one
with the list of known ones). An option given twice is refused rather than the last one
silently winning, options are never abbreviated, and there is no ``--help`` among the
``interface_args``. ``parser.invalid(component, problem)`` makes the same kind of error for
checks across arguments done after parsing.

The ``type=`` helpers below (``integer``, ``seconds``, ``size``, ``expecting``) turn a bad
value into "argument --x: expected ..., got '...'" instead of argparse's "invalid value".
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from orchestrator_core.context import Component
from orchestrator_core.errors import ConfigError

T = TypeVar("T")

# the attribute of a driver's factory holding its parser (an InterfaceArgs, or any
# argparse.ArgumentParser, or a callable returning one)
PARSER_ATTRIBUTE = "interface_args_parser"


class _Rejected(Exception):
    pass


class InterfaceArgs(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` for one driver's ``interface_args``."""

    def __init__(self, driver: str, **kwargs: Any) -> None:
        kwargs.setdefault("prog", driver)
        super().__init__(add_help=False, allow_abbrev=False, **kwargs)
        self.driver = driver
        self._required: list[tuple[argparse.Action, str | None]] = []  # with its help
        self._once: dict[str, str] = {}  # option string -> the option named in messages

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        # required options are checked after parsing, so the message can give their help
        required = bool(kwargs.pop("required", False))
        action = super().add_argument(*args, **kwargs)
        if required:
            self._required.append((action, action.help))
            action.default = None
            action.help = f"{action.help} (required)" if action.help else "(required)"
        if action.option_strings and kwargs.get("action", "store") == "store":
            for option in action.option_strings:
                self._once[option] = action.option_strings[-1]
        return action

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):
            message += f"; the {self.driver} driver takes {self.known_options()}"
        raise _Rejected(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _Rejected(message or f"exit {status}")

    def known_options(self) -> str:
        return ", ".join(a.option_strings[-1] for a in self._actions if a.option_strings)

    def invalid(self, component: Component, problem: str) -> ConfigError:
        """The error for ``problem`` with the Component's ``interface_args``."""
        return ConfigError(
            f"{component.label}: invalid interface_args {list(component.interface_args)}: "
            f"{problem} (`mender-orchestrator drivers {self.driver}` lists the arguments)"
        )

    def parse(self, component: Component) -> argparse.Namespace:
        """``component.interface_args`` parsed, or a ``ConfigError`` naming the problem."""
        args = list(component.interface_args)
        try:
            self._refuse_repeats(args)
            namespace = self.parse_args(args)
        except (_Rejected, argparse.ArgumentError) as exc:
            raise self.invalid(component, str(exc)) from None
        for action, meaning in self._required:
            if getattr(namespace, action.dest) is None:
                what = f": {meaning}" if meaning else ""
                raise self.invalid(
                    component, f"argument {action.option_strings[-1]} is missing{what}"
                )
        return namespace

    @staticmethod
    def given(component: Component, option: str) -> str | None:
        """The text given for ``option`` (``--x=TEXT`` or ``--x TEXT``), for messages about
        a value as the user wrote it; the last one if repeated, None if not given."""
        found = None
        args = list(component.interface_args)
        for i, arg in enumerate(args):
            if arg.startswith(option + "="):
                found = arg[len(option) + 1 :]
            elif arg == option and i + 1 < len(args):
                found = args[i + 1]
        return found

    def _refuse_repeats(self, args: Sequence[str]) -> None:
        seen: set[str] = set()
        for arg in args:
            if arg == "--":
                return
            option = self._once.get(arg.partition("=")[0])
            if option is None:
                continue
            if option in seen:
                raise _Rejected(f"argument {option}: given twice")
            seen.add(option)


def parser_of(factory: object) -> argparse.ArgumentParser | None:
    """The ``interface_args`` parser a driver's factory exposes, if any."""
    found = getattr(factory, PARSER_ATTRIBUTE, None)
    if found is not None and not isinstance(found, argparse.ArgumentParser) and callable(found):
        found = found()
    return found if isinstance(found, argparse.ArgumentParser) else None


# --------------------------------------------------------------------------- value types


def expecting(convert: Callable[[str], T], expected: str) -> Callable[[str], T]:
    """``convert`` as an argparse ``type``: its ``ValueError`` becomes
    "expected EXPECTED, got 'TEXT'"."""

    def parse(text: str) -> T:
        try:
            return convert(text)
        except (ValueError, TypeError):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    return parse


def integer(low: int, high: int) -> Callable[[str], int]:
    """Decimal or 0x-prefixed integers in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer (decimal or 0x-prefixed hex), got {text!r}"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"expected a value from {low:#x} to {high:#x}, got {text!r}"
            )
        return value

    return parse


def seconds(maximum: float | None = 86400.0) -> Callable[[str], float]:
    """A duration above 0 and at most ``maximum`` seconds (a day by default: longer is a
    typo; None: any finite duration). Infinity is refused: it would never time out."""
    bound = math.inf if maximum is None else maximum
    expected = (
        "a positive number of seconds"
        if maximum is None
        else (f"a number of seconds above 0 and at most {maximum:g}")
    )

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not (math.isfinite(value) and 0 < value <= bound):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def size(text: str) -> int:
    """A byte count: ``2048``, ``0x800``, ``2K`` or ``1M`` (KiB, MiB)."""
    scale = {"K": 1024, "M": 1024 * 1024}.get(text[-1:].upper(), 1)
    try:
        return int(text[:-1] if scale > 1 else text, 0) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a size in bytes (2048, 0x800, 2K, 1M), got {text!r}"
        ) from None


def absolute_path(text: str) -> Path:
    path = Path(text)
    if not path.is_absolute():
        raise argparse.ArgumentTypeError(f"expected an absolute path, got {text!r}")
    return path
