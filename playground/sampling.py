"""Sampling parameters: one validated, frozen dataclass and the ranges it is checked against.

Owns: the names, types, hard limits and defaults of the sampling controls, and the error that
names a bad field and its allowed range. space.yaml may narrow the ranges (see `settings`); the
sliders, the API and the command line all go through `SamplingParams.checked`.
Does not own: how an engine maps these onto OpenVINO or transformers (see `engine`).
"""

from __future__ import annotations

import math
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any

from playground.errors import UserError

MAX_STOP_STRINGS = 8
MAX_STOP_LENGTH = 100


class ParamError(UserError, ValueError):
    """A sampling value out of range or of the wrong type; the message is for people."""


@dataclass(frozen=True)
class Range:
    """Allowed values of one numeric control, and its default."""

    low: float
    high: float
    default: float
    step: float
    integer: bool = False

    def check(self, name: str, value: Any) -> int | float:
        kind = "a whole number" if self.integer else "a number"
        allowed = f"{name} must be {kind} from {_fmt(self.low)} to {_fmt(self.high)}"
        # bool is an int subclass; True as a temperature is a client bug, not 1.0.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamError(f"{allowed}, got {value!r} ({type(value).__name__}).")
        if not math.isfinite(value):
            raise ParamError(f"{allowed}, got {value}.")
        if self.integer and value != int(value):
            raise ParamError(f"{allowed}, got {value}.")
        if not self.low <= value <= self.high:
            raise ParamError(f"{allowed}, got {_fmt(value)}.")
        return int(value) if self.integer else float(value)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# Hard limits. Temperature 0 means greedy; top_k 0 means off (no top-k cut).
RANGES: dict[str, Range] = {
    "max_new_tokens": Range(1, 8192, 512, 1, integer=True),
    "temperature": Range(0.0, 2.0, 0.6, 0.05),
    "top_p": Range(0.05, 1.0, 0.9, 0.05),
    "top_k": Range(0, 1000, 50, 1, integer=True),
    "repetition_penalty": Range(1.0, 2.0, 1.2, 0.05),
    "seed": Range(0, 2**31 - 1, 42, 1, integer=True),
}


def _control(name: str, label: str, help: str) -> Any:
    """A sampling field: its default from RANGES, its label and help text in the metadata."""
    default = RANGES[name].default
    value = int(default) if RANGES[name].integer else default
    return field(default=value, metadata={"label": label, "help": help})


@dataclass(frozen=True)
class SamplingParams:
    """The sampling values of one generation. The fields' metadata (label, help) is what the
    UI controls, the command-line flags and the API page show: the parameters are named here
    once."""

    max_new_tokens: int = _control(
        "max_new_tokens",
        "Max new tokens",
        "The longest reply, in tokens; prompt plus reply must fit the context.",
    )
    temperature: float = _control(
        "temperature",
        "Temperature",
        "Randomness: 0 always picks the likeliest token (greedy); higher is more varied.",
    )
    top_p: float = _control(
        "top_p",
        "Top-p",
        "Sample only from the likeliest tokens whose probabilities add up to this.",
    )
    top_k: int = _control(
        "top_k", "Top-k", "Sample only from this many likeliest tokens; 0 means no limit."
    )
    repetition_penalty: float = _control(
        "repetition_penalty",
        "Repetition penalty",
        "Above 1 makes tokens already in the text less likely; 1 means off.",
    )
    seed: int = _control(
        "seed",
        "Seed",
        "The random seed: the same seed and values give the same reply (unless greedy).",
    )
    stop: tuple[str, ...] = field(
        default=(),
        metadata={
            "label": "Stop strings",
            "help": "Generation ends before the first of these texts (at most "
            f"{MAX_STOP_STRINGS}, each at most {MAX_STOP_LENGTH} characters).",
        },
    )

    def __post_init__(self) -> None:
        checked = _check_all(vars(self), RANGES)
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def checked(cls, ranges: dict[str, Range] | None = None, **values: Any) -> SamplingParams:
        """Build from untrusted values (API, sliders, CLI), within `ranges` (space.yaml's).

        A value left out or None takes the default of its range in `ranges`, so space.yaml's
        defaults apply and a narrowed range is never escaped through its default.
        """
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ParamError(f"Unknown sampling parameter(s): {', '.join(sorted(unknown))}.")
        ranges = {**RANGES, **(ranges or {})}
        values = {k: v for k, v in values.items() if v is not None}
        defaults = {name: r.default for name, r in ranges.items() if name not in values}
        return cls(**_check_all({**defaults, **values}, ranges))

    def with_(self, **changes: Any) -> SamplingParams:
        return replace(self, **changes)


# The numeric controls, in the order the UI shows them; `stop` is separate (a text box).
SAMPLING_FIELDS: tuple[Field, ...] = tuple(f for f in fields(SamplingParams) if f.name in RANGES)
SAMPLING_NAMES: tuple[str, ...] = tuple(f.name for f in SAMPLING_FIELDS)


def describe(name: str, ranges: dict[str, Range] | None = None) -> str:
    """The help text of a control, with its range and default: for tooltips, --help and the
    API page."""
    meta = {f.name: f.metadata for f in fields(SamplingParams)}[name]
    r = (ranges or RANGES).get(name)
    if r is None:
        return meta["help"]
    return f"{meta['help']} From {_fmt(r.low)} to {_fmt(r.high)}; default {_fmt(r.default)}."


def label(name: str) -> str:
    return {f.name: f.metadata for f in fields(SamplingParams)}[name]["label"]


def _check_all(values: dict[str, Any], ranges: dict[str, Range]) -> dict[str, Any]:
    checked = {
        name: ranges[name].check(name, value) for name, value in values.items() if name in ranges
    }
    if "stop" in values:
        checked["stop"] = _check_stop(values["stop"])
    return checked


def _check_stop(stop: Any) -> tuple[str, ...]:
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list | tuple) or not all(isinstance(s, str) for s in stop):
        raise ParamError("stop must be a list of strings.")
    stop = tuple(s for s in stop if s)
    if len(stop) > MAX_STOP_STRINGS or any(len(s) > MAX_STOP_LENGTH for s in stop):
        raise ParamError(
            f"stop takes at most {MAX_STOP_STRINGS} strings of at most {MAX_STOP_LENGTH} "
            "characters each."
        )
    return stop
