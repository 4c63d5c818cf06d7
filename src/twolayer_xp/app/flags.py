"""argparse helpers every command shares: one-line usage errors, and flags typed and checked by
the settings' own constraint tables."""

from __future__ import annotations

import argparse

from twolayer_xp.core import validation


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), like every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def checked(name: str, table: dict):
    """An argparse type that parses a number and applies ``table[name]`` (a constraint table of
    ``core.validation``'s form): the CLI and the Python API reject the same values with the same
    words."""
    kind = table[name].kind

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be {'an int' if kind is int else 'a number'}, got {text!r}"
            ) from None
        try:
            return validation.check(name, value, table)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def add_settings(groups: dict, settings: dict, table: dict, types: dict | None = None) -> None:
    """One flag per Setting (``app.config.Setting``), in its group, typed and checked by ``table``
    (or by ``types[name]``, an argparse type, where given)."""
    for name, s in settings.items():
        kwargs = {"help": s.help, "metavar": s.metavar, "choices": s.choices, "default": None}
        if types and name in types:
            kwargs["type"] = types[name]
        elif name in table:
            kwargs["type"] = checked(name, table)
        groups[s.group].add_argument(flag(name), *s.aliases, dest=name, **kwargs)
