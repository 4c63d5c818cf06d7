"""argparse helpers every command shares: one-line usage errors, and flags typed and checked by
the settings' own constraint tables."""

from __future__ import annotations

import argparse
import re
import sys

from twolayer_xp.core import validation


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), like every other error."""

    def parse_known_args(self, args=None, namespace=None):
        self.argv = list(sys.argv[1:] if args is None else args)  # for error's hint
        return super().parse_known_args(args, namespace)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}{self._dash_hint(message)} (see --help)\n")

    def _dash_hint(self, message: str) -> str:
        """For ``--lr -1:1``: argparse takes a value starting with '-' for a flag (unless it reads
        as a plain negative number) and says only "expected one argument"; the hint shows the
        form that passes the value, so that the value's own check can answer."""
        match = re.fullmatch(r"argument (\S+): expected one argument", message)
        if not match:
            return ""
        names, argv = match[1].split("/"), getattr(self, "argv", [])
        for token, value in zip(argv, argv[1:], strict=False):  # each token and the one after it
            named = token in names or (token.startswith("--") and any(n.startswith(token) for n in names))
            option = value.split("=", 1)[0]  # a value left out: the next token is a flag
            a_flag = option in self._option_string_actions or (
                option.startswith("--") and any(o.startswith(option) for o in self._option_string_actions)
            )
            if named and value.startswith("-") and not a_flag:
                return f"; a value starting with '-' is written {token}={value}"
        return ""


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
