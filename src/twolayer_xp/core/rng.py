"""The host random stream: weights and minibatch indices drawn by numpy, then sent to the device."""

from __future__ import annotations

from typing import Any

import numpy as np

# numpy's bit generators: the only ones a Generator may use here, since only their states are
# known to be plain JSON once their arrays are lists (how a checkpoint stores them).
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
STATE_FORMAT = (
    '{"kind": "RandomState", "state": ["MT19937", 624 uint32 keys, pos 0..624, 0 or 1, float]} or '
    '{"kind": "Generator", "state": the bit_generator.state of ' + ", ".join(BIT_GENERATORS) + "}"
)


class HostRNG:
    """The host-side random stream used for weights and minibatches.

    rng: None for numpy's legacy global state (what CS231n code seeds with ``np.random.seed``),
    an int seed, a ``numpy.random.Generator`` or a ``numpy.random.RandomState``. Draws happen on
    the host and are then sent to the device, so one seed gives one trajectory on every backend.
    """

    def __init__(self, rng: Any = None):
        if rng is None:
            self._source = np.random  # the module's functions share the state np.random.seed sets
        elif isinstance(rng, np.random.RandomState):
            self._source = rng
        elif isinstance(rng, np.random.Generator):
            name = type(rng.bit_generator).__name__
            if name not in BIT_GENERATORS:
                raise TypeError(
                    f"rng's bit generator {name} cannot be saved in a checkpoint; use a Generator "
                    f"on one of {', '.join(BIT_GENERATORS)} (np.random.default_rng(seed) is PCG64)"
                )
            self._source = rng
        elif isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
            if rng < 0:
                raise ValueError(f"rng seed must be >= 0, got {rng}")
            self._source = np.random.default_rng(int(rng))
        else:
            raise TypeError(
                f"rng must be None, an int seed, a numpy Generator or RandomState; got {type(rng).__name__}"
            )

    def __reduce__(self):
        # numpy's global state is a module: a copy of a global-state stream stays global.
        return HostRNG, (None if self._source is np.random else self._source,)

    @classmethod
    def from_state(cls, snapshot: dict) -> HostRNG:
        """A new stream that continues from ``get_state()``'s snapshot (never the global one)."""
        if snapshot.get("kind") == "RandomState":
            rng = cls(np.random.RandomState())
        elif snapshot.get("kind") == "Generator":
            name = snapshot["state"].get("bit_generator")
            if name not in BIT_GENERATORS:
                raise ValueError(f"unknown bit generator {name!r} in random state")
            rng = cls(np.random.Generator(getattr(np.random, name)()))
        else:
            raise ValueError(f"random state of kind {snapshot.get('kind')!r} is not one this package writes")
        rng.set_state(snapshot)
        return rng

    @property
    def is_legacy(self) -> bool:
        """A RandomState (or numpy's global one): CS231n's randn / choice streams."""
        return self._source is np.random or isinstance(self._source, np.random.RandomState)

    def scaled_normal(self, shape: tuple[int, ...], std: float) -> np.ndarray:
        """``std`` * N(0, 1) draws of ``shape`` (float64). An overflow to inf is left to the
        caller's check (validation.initial_weights), without numpy's warning on the way."""
        with np.errstate(over="ignore", invalid="ignore"):
            return std * self.standard_normal(shape)

    def standard_normal(self, shape: tuple[int, ...]) -> np.ndarray:
        if self.is_legacy:
            return self._source.randn(*shape)  # CS231n's np.random.randn stream
        return self._source.standard_normal(shape)

    def minibatch_indices(self, num_train: int, size: int) -> np.ndarray:
        """``size`` row indices in [0, num_train), drawn with replacement.

        Drawing n*B at once gives the same indices as n draws of B (tested), which is what lets a
        run fetch all its minibatches in one transfer and still match CS231n's per-step
        ``np.random.choice(num_train, batch_size)``.
        """
        if self.is_legacy:
            return self._source.choice(num_train, size)
        return self._source.integers(0, num_train, size=size)

    def get_state(self) -> dict:
        """A JSON-serializable snapshot of the stream (for checkpoints)."""
        if self.is_legacy:
            kind, keys, pos, has_gauss, cached = self._source.get_state()
            return {
                "kind": "RandomState",
                "state": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            }
        return {"kind": "Generator", "state": _plain(self._source.bit_generator.state)}

    def set_state(self, snapshot: dict) -> None:
        kind = snapshot.get("kind")
        if kind == "RandomState" and self.is_legacy:
            name, keys, pos, has_gauss, cached = snapshot["state"]
            self._source.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        elif kind == "Generator" and not self.is_legacy:
            self._source.bit_generator.state = snapshot["state"]
        else:
            raise ValueError(f"random state of kind {kind!r} cannot restore a {type(self._source).__name__}")


def valid_state(snapshot) -> bool:
    """Whether ``snapshot`` is a state ``HostRNG.from_state`` restores (``STATE_FORMAT``): the
    check a checkpoint's random state must pass before anything else of it is used."""
    if not isinstance(snapshot, dict) or set(snapshot) != {"kind", "state"}:
        return False
    s = snapshot["state"]
    if snapshot["kind"] == "RandomState":
        return (
            isinstance(s, list)
            and len(s) == 5
            and s[0] == "MT19937"
            and _ints(s[1], 624, 32)
            and _int(s[2])
            and 0 <= s[2] <= 624  # numpy does not check: a larger one reads past the key array
            and s[3] in (0, 1)
            and isinstance(s[4], (int, float))
            and not isinstance(s[4], bool)
        )
    if (
        snapshot["kind"] != "Generator"
        or not isinstance(s, dict)
        or s.get("bit_generator") not in BIT_GENERATORS
    ):
        return False
    try:
        getattr(np.random, s["bit_generator"])().state = s
    except Exception:  # numpy's setters raise TypeError, ValueError or KeyError for a bad state
        return False
    return True


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _ints(v, length: int, bits: int) -> bool:
    return isinstance(v, list) and len(v) == length and all(_int(k) and 0 <= k < 2**bits for k in v)


def _plain(state):
    """A bit generator's state with its numpy arrays and scalars as lists and Python numbers."""
    if isinstance(state, dict):
        return {k: _plain(v) for k, v in state.items()}
    if isinstance(state, (np.ndarray, np.generic)):
        return state.tolist()
    return state
