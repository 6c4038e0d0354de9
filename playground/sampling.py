"""Sampling parameters: one validated, frozen dataclass and the ranges it is checked against.

Owns: the names, types and defaults of the sampling controls, two sets of limits, and the
error that names a bad field and its allowed values:
* `DOMAINS`, what the engines accept; every `SamplingParams` is inside them, and the API and
  the command line take any value in them (`SamplingParams.from_request`);
* `RANGES`, the sliders' comfortable ranges (hard limits of space.yaml's narrower ones); the
  sliders go through `SamplingParams.checked`.
* the one mapping of a `SamplingParams` onto OpenVINO GenAI's `GenerationConfig` fields
  (`genai_options`) and onto transformers' `generate()` arguments (`transformers_options`),
  which the engines and every exported snippet use.
Does not own: the engines themselves (see `engines`), the end ids (the tokenizer's config).
"""

from __future__ import annotations

import math
import random
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any

from playground.errors import UserError

# The stop box of the UI.
MAX_STOP_STRINGS = 8
MAX_STOP_LENGTH = 100
# The engine checks every stop string at every token, in Python: 64 of 100 characters cost
# about 1 ms a token on the 2-core dev machine (0.14 ms for 8; 6 ms for 256), under 1% of a
# 9B model's time per token on a CPU.
MAX_ENGINE_STOP_STRINGS = 64
# A seed of -1 asks for a random one, drawn in the UI seed field's range.
RANDOM_SEED = -1
# The smallest normal float32: the engines hold these values as float32, where a smaller one
# (say 1e-300) is 0 and fails inside the engine, or divides by zero.
FLOAT32_TINY = 1.1754944e-38


class ParamError(UserError, ValueError):
    """A sampling value out of range or of the wrong type; the message is for people."""


@dataclass(frozen=True)
class Domain:
    """The values one numeric control may take: low to high, either end possibly open."""

    low: float
    high: float = math.inf
    integer: bool = False
    low_open: bool = False  # low itself is not allowed (top_p 0, repetition_penalty 0)

    def describe(self, name: str) -> str:
        return f"{name} must be {self.values()}"

    def values(self) -> str:
        """The values allowed, in words: "a number from 0 to 2"."""
        kind = "a whole number" if self.integer else "a number"
        low = f"above {_fmt(self.low)}" if self.low_open else None
        if self.high == math.inf:
            return f"{kind} {low or 'of at least ' + _fmt(self.low)}"
        if low:
            return f"{kind} {low} and at most {_fmt(self.high)}"
        return f"{kind} from {_fmt(self.low)} to {_fmt(self.high)}"

    def check(self, name: str, value: Any) -> int | float:
        allowed = self.describe(name)
        # bool is an int subclass; True as a temperature is a client bug, not 1.0.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamError(f"{allowed}, got {value!r} ({type(value).__name__}).")
        # An int is always finite (and a huge one would overflow math.isfinite's float).
        if isinstance(value, float) and not math.isfinite(value):
            raise ParamError(f"{allowed}, got {value}.")
        if self.integer and value != int(value):
            raise ParamError(f"{allowed}, got {value}.")
        inside_low = self.low < value if self.low_open else self.low <= value
        if not (inside_low and value <= self.high):
            raise ParamError(f"{allowed}, got {_fmt(value)}.")
        if not self.integer and 0 < abs(value) < FLOAT32_TINY:
            raise ParamError(
                f"{allowed}, got {value}, which is 0 in the engine's float32: use 0 or at least "
                f"{FLOAT32_TINY}."
            )
        return int(value) if self.integer else float(value)


@dataclass(frozen=True)
class Range:
    """A slider: its allowed values (closed at both ends), default and step."""

    low: float
    high: float
    default: float
    step: float
    integer: bool = False

    def check(self, name: str, value: Any) -> int | float:
        return Domain(self.low, self.high, self.integer).check(name, value)


def _fmt(x: float) -> str:
    # int(x) for a big whole number, so 2**64 - 1 prints exactly rather than as a float.
    if isinstance(x, int):
        return str(x)
    return str(int(x)) if float(x).is_integer() else str(x)


# What the engines accept (OpenVINO GenAI's GenerationConfig and transformers' generate).
# Temperature keeps the sliders' 2: past it a reply is noise. max_new_tokens is held to the
# context size per request (`from_request`). Seeds are unsigned 64-bit in both engines.
DOMAINS: dict[str, Domain] = {
    "max_new_tokens": Domain(1, integer=True),
    "temperature": Domain(0.0, 2.0),
    "top_p": Domain(0.0, 1.0, low_open=True),
    "top_k": Domain(0, integer=True),
    "repetition_penalty": Domain(0.0, low_open=True),  # below 1 encourages repetition
    "seed": Domain(0, 2**64 - 1, integer=True),
}

# The sliders' hard limits. Temperature 0 means greedy; top_k 0 means off (no top-k cut).
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
    prompt_lookup: bool = field(
        default=False,
        metadata={
            "label": "Prompt lookup",
            "help": "Drafts tokens by copying the prompt where the reply starts to repeat it, "
            "and the model checks several at once: faster when the reply quotes, edits or "
            "summarises the prompt, slower when it writes something new.",
        },
    )

    def __post_init__(self) -> None:
        checked = _check_all(vars(self), DOMAINS, MAX_ENGINE_STOP_STRINGS)
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
        return cls(**_check_all({**defaults, **values}, ranges, MAX_STOP_STRINGS))

    @classmethod
    def from_request(
        cls, ranges: dict[str, Range], context_size: int, **values: Any
    ) -> tuple[SamplingParams, int | None]:
        """Build from an API or command-line request: anything the engine accepts.

        A value left out or None takes its default from `ranges` (space.yaml's), max_new_tokens
        at most the context size. A seed of -1 draws a random one. Returns the parameters and
        the seed drawn (None when the request chose one), so the caller can report it.
        """
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ParamError(f"Unknown sampling parameter(s): {', '.join(sorted(unknown))}.")
        domains = {
            **DOMAINS,
            "max_new_tokens": Domain(1, context_size, integer=True),
            "seed": Domain(RANDOM_SEED, DOMAINS["seed"].high, integer=True),
        }
        values = {k: v for k, v in values.items() if v is not None}
        ranges = {**RANGES, **ranges}
        missing = {name: r.default for name, r in ranges.items() if name not in values}
        if "max_new_tokens" in missing:  # a default never refuses a small context
            missing["max_new_tokens"] = min(missing["max_new_tokens"], context_size)
        checked = _check_all({**missing, **values}, domains, MAX_ENGINE_STOP_STRINGS)
        drawn = None
        if checked["seed"] == RANDOM_SEED:
            drawn = checked["seed"] = random.randint(0, int(RANGES["seed"].high))
        return cls(**checked), drawn

    def with_(self, **changes: Any) -> SamplingParams:
        return replace(self, **changes)

    def values(self) -> dict[str, Any]:
        """The numeric values by name (`SAMPLING_NAMES`), as the sliders and links hold them."""
        return {name: getattr(self, name) for name in RANGES}


def _top_k(params: SamplingParams, vocab_size: int | None) -> int:
    # top_k has no cap in the API; past the vocabulary it cuts nothing, and GenAI's size_t
    # field could not hold every whole number anyway.
    return min(params.top_k, vocab_size) if vocab_size else params.top_k


def _sampled(params: SamplingParams, vocab_size: int | None = None) -> dict[str, Any] | None:
    """The values that shape sampling, or None for greedy: the greedy rule, once (temperature
    0 picks the likeliest token, whatever top-p and top-k say). top_k 0 means off."""
    if params.greedy:
        return None
    return {"temperature": params.temperature, "top_p": params.top_p,
            "top_k": _top_k(params, vocab_size)}  # fmt: skip


def genai_options(params: SamplingParams, vocab_size: int | None = None) -> dict[str, Any]:
    """OpenVINO GenAI's GenerationConfig fields for `params`, besides the end ids: always
    max_new_tokens (GenAI's is unbounded by default) and repetition_penalty; the sampling
    fields only when sampling, top_k only when it cuts (capped at `vocab_size` when given)."""
    options: dict[str, Any] = {
        "max_new_tokens": params.max_new_tokens,
        "repetition_penalty": params.repetition_penalty,
    }
    if sampled := _sampled(params, vocab_size):
        top_k = sampled.pop("top_k")
        options |= {"do_sample": True, **sampled, "rng_seed": params.seed}
        if top_k:
            options["top_k"] = top_k
    return options


def transformers_options(params: SamplingParams, vocab_size: int | None = None) -> dict[str, Any]:
    """transformers' generate() sampling arguments for `params` (its seed is torch's global
    one, set apart): greedy, or sampling with top_k None when it is off."""
    sampled = _sampled(params, vocab_size)
    if sampled is None:
        return {"do_sample": False}
    return {"do_sample": True, **sampled, "top_k": sampled["top_k"] or None}


def openai_options(params: SamplingParams, repetition_penalty: str) -> dict[str, Any]:
    """An OpenAI-style completions request's fields for `params`: greedy as temperature 0 with
    top_p 1 (so a server that samples at temperature 0 still picks the likeliest), top_k and
    the repetition penalty (named `repetition_penalty` by the server) in `extra_body`."""
    sampled = _sampled(params) or {"temperature": 0.0, "top_p": 1.0}
    return {
        "max_tokens": params.max_new_tokens,
        "temperature": sampled["temperature"],
        "top_p": sampled["top_p"],
        "seed": params.seed,
        "extra_body": {"top_k": params.top_k, repetition_penalty: params.repetition_penalty},
    }


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


def describe_request(name: str, ranges: dict[str, Range] | None = None) -> str:
    """The help text of a value an API or command-line request may set: what it does, what
    the engine accepts (`DOMAINS`, which `from_request` checks), the sliders' range and the
    default. The sliders' range alone promised less than a request takes (issue 33)."""
    meta = {f.name: f.metadata for f in fields(SamplingParams)}[name]
    r = (ranges or RANGES)[name]
    if name == "max_new_tokens":  # `from_request` holds it to the context size
        accepted = "a whole number from 1 to the model's context size"
    elif name == "seed":
        accepted = f"{DOMAINS[name].values()}, or -1 to draw one (reported)"
    else:
        accepted = DOMAINS[name].values()
    return (
        f"{meta['help']} Takes {accepted}; the web app's slider goes from {_fmt(r.low)} to "
        f"{_fmt(r.high)}; default {_fmt(r.default)}."
    )


def label(name: str) -> str:
    return {f.name: f.metadata for f in fields(SamplingParams)}[name]["label"]


def _check_all(
    values: dict[str, Any], limits: dict[str, Range | Domain], max_stops: int
) -> dict[str, Any]:
    checked = {
        name: limits[name].check(name, value) for name, value in values.items() if name in limits
    }
    if "stop" in values:
        checked["stop"] = _check_stop(values["stop"], max_stops)
    if "prompt_lookup" in values:
        lookup = values["prompt_lookup"]
        if not isinstance(lookup, bool):
            raise ParamError(f"prompt_lookup must be true or false, got {lookup!r}.")
        checked["prompt_lookup"] = lookup
    return checked


def stop_list(stop: Any) -> list[str]:
    """Stop strings as given: one text (a string per line), a list of strings, or None."""
    if stop is None:
        return []
    if isinstance(stop, str):
        return stop.splitlines()
    if isinstance(stop, list | tuple) and all(isinstance(s, str) for s in stop):
        return list(stop)
    # Not list(stop): a mapping would become its keys, a number a TypeError.
    raise ParamError(
        f"stop must be text (one stop string per line) or a list of strings, got {stop!r}."[:300]
    )


def _check_stop(stop: Any, max_stops: int) -> tuple[str, ...]:
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list | tuple) or not all(isinstance(s, str) for s in stop):
        raise ParamError("stop must be a list of strings.")
    for number, text in enumerate(stop, 1):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ParamError(f"stop string {number} holds a lone surrogate: remove it.") from None
    stop = tuple(s for s in stop if s)
    longest = max(map(len, stop), default=0)
    if len(stop) > max_stops or longest > MAX_STOP_LENGTH:
        got = f"{len(stop)} strings" if len(stop) > max_stops else f"one of {longest}"
        raise ParamError(
            f"stop takes at most {max_stops} strings of at most {MAX_STOP_LENGTH} "
            f"characters each, got {got}."
        )
    return stop
