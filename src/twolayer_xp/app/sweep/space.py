"""A searched setting (hidden size, batch size, decay, std, iterations or epochs): one fixed value,
a list of choices, or a range, parsed from a flag or the API, checked value by value by the
settings' own constraint table, stored in the study, and sampled by a trial.

Syntax: ``V`` a fixed value (what the flag always meant); ``A,B,C`` choices (Optuna's
categorical); ``LOW:HIGH`` a range, on the scale ``SCALES`` gives the setting (log for sizes and
std, linear for decay and epochs). From Python: a number, that string, a list (choices) or a
tuple (low, high); or the stored form ``parse`` returns (a dict).
"""

from __future__ import annotations

from twolayer_xp.app.flags import flag
from twolayer_xp.core import validation

# Searchable settings -> whether their range is searched on a log scale.
SCALES = {
    "hidden_size": True,
    "batch_size": True,
    "learning_rate_decay": False,
    "std": True,
    "num_iters": True,
    "epochs": False,
}
SYNTAX = "a value, A,B,.. (choices) or LOW:HIGH (a range)"
SIGNIFICANT = 12  # digits of a computed default range (``decimal``) and of a shown lr/reg range


def parse(name: str, value, table: dict):
    """The search of ``name`` in its stored form: a number (fixed), {"choices": [...]} (sorted,
    distinct; one choice is a fixed value) or {"low", "high", "log"}. Every value is checked by
    ``table[name]``; TypeError/ValueError name the flag."""
    kind = table[name].kind
    if isinstance(value, dict):  # already parsed (the CLI's flags are): checked again
        value = _unstored(name, value)
    if isinstance(value, str):
        if ":" in value:
            value = tuple(value.split(":"))
        elif "," in value:
            value = [part for part in value.split(",") if part.strip()]
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"{flag(name)} must be {SYNTAX}; a range is two numbers, got {value!r}")
        low, high = (_number(name, v, kind, table) for v in value)
        log = SCALES[name]
        if not (low < high) or (log and low <= 0):
            bound = "0 < LOW < HIGH (log scale)" if log else "LOW < HIGH"
            raise ValueError(f"{flag(name)} {low:g}:{high:g} is empty or inverted: need {bound}")
        return {"low": low, "high": high, "log": log}
    if isinstance(value, list):
        choices = sorted({_number(name, v, kind, table) for v in value})
        if not choices:
            raise ValueError(f"{flag(name)} must be {SYNTAX}; got no values")
        return choices[0] if len(choices) == 1 else {"choices": choices}
    return _number(name, value, kind, table)


def _unstored(name: str, stored: dict) -> list | tuple:
    """The choices (a list) or range (a tuple) of a dict in ``parse``'s stored form:
    {"choices": [...]}, or {"low", "high", "log"} with the scale SCALES gives ``name`` (a range's
    scale is the setting's, not the caller's). Any other dict is a TypeError naming the flag."""
    if set(stored) == {"choices"} and isinstance(stored["choices"], (list, tuple)):
        return list(stored["choices"])
    if set(stored) == {"low", "high", "log"} and stored["log"] is SCALES[name]:
        return (stored["low"], stored["high"])
    scale = "log" if SCALES[name] else "linear"
    raise TypeError(
        f'{flag(name)} must be {SYNTAX}; a dict, the stored form {{"choices": [...]}} or {{"low": L, '
        f'"high": H, "log": {SCALES[name]}}} ({scale} scale, its only one); got {stored!r}'
    )


def _number(name: str, value, kind: type, table: dict):
    if isinstance(value, str):
        try:
            value = kind(value.strip())
        except ValueError:
            raise ValueError(
                f"{flag(name)} must be {SYNTAX}, each {'an int' if kind is int else 'a number'}; got {value!r}"
            ) from None
    return validation.check(name, value, table)


def is_fixed(search) -> bool:
    return not isinstance(search, dict)


def sample(trial, name: str, search):
    """The trial's value of ``name``: the fixed value, or Optuna's suggestion (a trial param)."""
    if is_fixed(search):
        return search
    if "choices" in search:
        return trial.suggest_categorical(name, search["choices"])
    if isinstance(search["low"], int):
        return trial.suggest_int(name, search["low"], search["high"], log=search["log"])
    return trial.suggest_float(name, search["low"], search["high"], log=search["log"])


def shown(search) -> str:
    """The search as its flag's text: 64, 50,100,200 or 0.9:1 (log scale); a float short
    (0.3) unless that would hide a digit it has (0.30000000000000004: a refusal then shows
    what differs)."""
    if is_fixed(search):
        if isinstance(search, float):
            return f"{search:g}" if float(f"{search:g}") == search else repr(search)
        return str(search)
    if "choices" in search:
        return ",".join(shown(v) for v in search["choices"])
    return f"{shown(search['low'])}:{shown(search['high'])}{' (log scale)' if search['log'] else ''}"


def shown_setting(name: str, value) -> str:
    """A stored search entry as text: a searchable setting as its flag's text, the lr/reg range
    as LOW:HIGH and the grid's values as a,b,c (to SIGNIFICANT digits), others as is."""
    if name in SCALES and value is not None:
        return shown(value)
    numbers = isinstance(value, list) and all(isinstance(v, (int, float)) for v in value)
    if numbers and name in ("lr", "reg") and len(value) == 2:
        return ":".join(f"{v:.{SIGNIFICANT}g}" for v in value)
    if numbers and name in ("grid_lr", "grid_reg"):
        return ",".join(f"{v:.{SIGNIFICANT}g}" for v in value)
    return str(value)


def decimal(x: float) -> float:
    """``x`` to SIGNIFICANT digits: a computed value (1e-4 x 0.01 = 1.0000000000000002e-06) as
    the decimal a user would type (1e-06)."""
    return float(f"{x:.{SIGNIFICANT}g}")


def iterations(epochs: int, num_train: int, batch_size: int) -> int:
    """SGD iterations of ``epochs`` passes, rounded up, an epoch being CS231n's max(N / B, 1)
    iterations: ceil(E N / B) in integers (E * (N / B) in floats can land a hair above a whole
    number, and round up one iteration too many)."""
    return epochs if batch_size >= num_train else -(-epochs * num_train // batch_size)


def epochs_in(num_iters: int, num_train: int, batch_size: int) -> int:
    """Whole epochs (as ``iterations`` counts them) in ``num_iters`` iterations."""
    return num_iters if batch_size >= num_train else num_iters * batch_size // num_train


def bounds(search) -> tuple:
    """The smallest and largest value ``search`` can give."""
    if is_fixed(search):
        return search, search
    if "choices" in search:
        return search["choices"][0], search["choices"][-1]
    return search["low"], search["high"]
