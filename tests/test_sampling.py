"""Sampling values: the hard limits, the narrower ranges of space.yaml and the error messages."""

import math
import re

import pytest

from playground.sampling import (
    DOMAINS,
    MAX_ENGINE_STOP_STRINGS,
    MAX_STOP_LENGTH,
    MAX_STOP_STRINGS,
    RANGES,
    Domain,
    ParamError,
    Range,
    SamplingParams,
)

# Each control's hard range as the error message words it.
ALLOWED = {
    "max_new_tokens": "max_new_tokens must be a whole number from 1 to 8192",
    "temperature": "temperature must be a number from 0 to 2",
    "top_p": "top_p must be a number from 0.05 to 1",
    "top_k": "top_k must be a whole number from 0 to 1000",
    "repetition_penalty": "repetition_penalty must be a number from 1 to 2",
    "seed": "seed must be a whole number from 0 to 2147483647",
}
# Just outside the hard range, on each side.
OUTSIDE = {
    "max_new_tokens": (0, 8193),
    "temperature": (-0.01, 2.01),
    "top_p": (0.04, 1.01),
    "top_k": (-1, 1001),
    "repetition_penalty": (0.99, 2.01),
    "seed": (-1, 2**31),
}
INTEGER_FIELDS = [name for name, r in RANGES.items() if r.integer]


def test_every_control_has_a_message_and_out_of_range_values():
    assert set(ALLOWED) == set(OUTSIDE) == set(RANGES)
    assert INTEGER_FIELDS == ["max_new_tokens", "top_k", "seed"]


@pytest.mark.parametrize("name", list(RANGES))
@pytest.mark.parametrize("side", [0, 1])
def test_out_of_range_names_the_field_and_its_range(name, side):
    value = OUTSIDE[name][side]
    with pytest.raises(ParamError) as caught:
        SamplingParams.checked(**{name: value})
    message = str(caught.value)
    assert message.startswith(ALLOWED[name] + ", got ")
    assert str(value) in message


@pytest.mark.parametrize("name", list(RANGES))
def test_both_ends_of_the_range_are_allowed(name):
    r = RANGES[name]
    for value in (r.low, r.high):
        params = SamplingParams.checked(**{name: int(value) if r.integer else value})
        assert getattr(params, name) == value


@pytest.mark.parametrize("name", list(RANGES))
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "+inf", "-inf"])
def test_non_finite_is_refused(name, value):
    with pytest.raises(ParamError, match="^" + re.escape(f"{ALLOWED[name]}, got {value}.") + "$"):
        SamplingParams.checked(**{name: value})


@pytest.mark.parametrize("name", list(RANGES))
@pytest.mark.parametrize(
    "value, type_name",
    [(True, "bool"), (False, "bool"), ("0.5", "str"), ("1", "str"), ([1], "list")],
)
def test_wrong_type_is_refused_with_its_type(name, value, type_name):
    with pytest.raises(ParamError) as caught:
        SamplingParams.checked(**{name: value})
    assert str(caught.value) == f"{ALLOWED[name]}, got {value!r} ({type_name})."


@pytest.mark.parametrize("name", INTEGER_FIELDS)
def test_integer_fields_refuse_fractions_and_take_whole_floats(name):
    low = int(RANGES[name].low)
    with pytest.raises(ParamError, match=re.escape(f"{ALLOWED[name]}, got {low + 1.5}.")):
        SamplingParams.checked(**{name: low + 1.5})
    params = SamplingParams.checked(**{name: float(low + 1)})
    assert getattr(params, name) == low + 1
    assert type(getattr(params, name)) is int


def test_max_new_tokens_one_and_a_half_is_refused():
    with pytest.raises(ParamError, match=r"^max_new_tokens must be a whole number from 1 to 8192"):
        SamplingParams.checked(max_new_tokens=1.5)


@pytest.mark.parametrize("name", [n for n in RANGES if not RANGES[n].integer])
def test_float_fields_take_ints_and_store_floats(name):
    value = int(RANGES[name].high)
    params = SamplingParams.checked(**{name: value})
    assert getattr(params, name) == value
    assert type(getattr(params, name)) is float


def test_none_means_default():
    params = SamplingParams.checked(
        max_new_tokens=None,
        temperature=None,
        top_p=None,
        top_k=None,
        repetition_penalty=None,
        seed=None,
        stop=None,
    )
    assert params == SamplingParams()
    assert params.max_new_tokens == 512 and params.temperature == 0.6 and params.top_p == 0.9
    assert params.top_k == 50 and params.repetition_penalty == 1.2 and params.seed == 42
    assert params.stop == ()
    assert SamplingParams.checked(temperature=None, top_k=7) == SamplingParams(top_k=7)


def test_unknown_field_is_named():
    with pytest.raises(ParamError, match=r"^Unknown sampling parameter\(s\): top_q\.$"):
        SamplingParams.checked(top_q=0.5)
    with pytest.raises(ParamError, match=r"Unknown sampling parameter\(s\): min_p, typical_p\."):
        SamplingParams.checked(typical_p=0.5, min_p=None, temperature=1.0)


def test_temperature_zero_is_greedy():
    assert SamplingParams.checked(temperature=0).greedy
    assert SamplingParams.checked(temperature=0.0).greedy
    assert not SamplingParams.checked(temperature=0.05).greedy
    assert not SamplingParams.checked().greedy


# ----------------------------------------------------------------------------------- stop strings


def test_a_single_stop_string_is_coerced_to_a_tuple():
    assert SamplingParams.checked(stop="###").stop == ("###",)
    assert SamplingParams(stop="###").stop == ("###",)


def test_stop_list_becomes_a_tuple_without_empty_strings():
    assert SamplingParams.checked(stop=["a", "", "b"]).stop == ("a", "b")
    assert SamplingParams.checked(stop="").stop == ()
    assert SamplingParams.checked(stop=[]).stop == ()


def test_at_most_eight_stop_strings():
    assert len(SamplingParams.checked(stop=["x"] * MAX_STOP_STRINGS).stop) == MAX_STOP_STRINGS
    with pytest.raises(ParamError, match=r"^stop takes at most 8 strings of at most 100 char"):
        SamplingParams.checked(stop=[str(i) for i in range(MAX_STOP_STRINGS + 1)])


def test_stop_strings_of_at_most_a_hundred_characters():
    assert SamplingParams.checked(stop=["y" * MAX_STOP_LENGTH]).stop == ("y" * MAX_STOP_LENGTH,)
    with pytest.raises(ParamError, match=r"^stop takes at most 8 strings of at most 100 char"):
        SamplingParams.checked(stop=["ok", "y" * (MAX_STOP_LENGTH + 1)])
    with pytest.raises(ParamError, match=r"^stop takes"):
        SamplingParams.checked(stop="y" * (MAX_STOP_LENGTH + 1))


@pytest.mark.parametrize("stop", [["a", 1], [None], 5, {"a"}, [b"a"], True])
def test_non_string_stop_is_refused(stop):
    with pytest.raises(ParamError, match=r"^stop must be a list of strings\.$"):
        SamplingParams.checked(stop=stop)


# ------------------------------------------------------------------------ narrower (space.yaml)


def narrowed(**changes: Range) -> dict[str, Range]:
    return {**RANGES, **changes}


def test_narrower_ranges_are_enforced_with_their_own_bounds_in_the_message():
    ranges = narrowed(
        temperature=Range(0.1, 1.5, 0.7, 0.05),
        max_new_tokens=Range(1, 256, 128, 1, integer=True),
    )
    # Inside the hard limits, outside the narrower ones.
    with pytest.raises(ParamError, match=r"^temperature must be a number from 0\.1 to 1\.5, got 0"):
        SamplingParams.checked(ranges, temperature=0)
    with pytest.raises(ParamError, match=r"^temperature must be a number from 0\.1 to 1\.5, got 2"):
        SamplingParams.checked(ranges, temperature=2.0)
    with pytest.raises(ParamError, match=r"^max_new_tokens must be a whole number from 1 to 256"):
        SamplingParams.checked(ranges, max_new_tokens=257)
    params = SamplingParams.checked(ranges, temperature=1.5, max_new_tokens=256)
    assert (params.temperature, params.max_new_tokens) == (1.5, 256)
    # The hard limits still apply without the narrower ranges.
    assert SamplingParams.checked(temperature=0).greedy


def test_defaults_come_from_the_ranges_given():
    ranges = narrowed(
        max_new_tokens=Range(1, 256, 128, 1, integer=True),
        temperature=Range(0.1, 1.5, 0.7, 0.05),
        seed=Range(0, 1000, 7, 1, integer=True),
    )
    params = SamplingParams.checked(ranges)
    # Never the built-in 512, which is outside 1..256.
    assert params.max_new_tokens == 128
    assert params.temperature == 0.7 and params.seed == 7
    assert params.top_p == RANGES["top_p"].default
    assert SamplingParams.checked(ranges, max_new_tokens=None).max_new_tokens == 128


def test_a_partial_ranges_mapping_keeps_the_hard_limits_for_the_rest():
    ranges = {"top_k": Range(0, 10, 5, 1, integer=True)}
    with pytest.raises(ParamError, match=r"^top_k must be a whole number from 0 to 10, got 11"):
        SamplingParams.checked(ranges, top_k=11)
    with pytest.raises(ParamError, match=r"^top_p must be a number from 0\.05 to 1, got 3"):
        SamplingParams.checked(ranges, top_p=3)
    assert SamplingParams.checked(ranges).top_k == 5


def test_with_and_direct_construction_check_the_hard_limits():
    params = SamplingParams()
    with pytest.raises(ParamError, match=r"^temperature must be a number from 0 to 2"):
        params.with_(temperature=5)
    with pytest.raises(ParamError, match=r"^top_k must be a whole number"):
        SamplingParams(top_k=2.5)
    assert params.with_(seed=3).seed == 3


# ------------------------------------------------------------------------------ Range.check


def test_range_check_returns_the_right_type():
    assert Range(0, 10, 5, 1, integer=True).check("n", 3.0) == 3
    assert type(Range(0, 10, 5, 1, integer=True).check("n", 3.0)) is int
    assert type(Range(0.0, 1.0, 0.5, 0.1).check("x", 1)) is float


@pytest.mark.parametrize(
    "r, value, message",
    [
        (Range(0.5, 1.5, 1, 0.1), 0.25, "x must be a number from 0.5 to 1.5, got 0.25."),
        (Range(0, 3, 1, 1, integer=True), 4, "x must be a whole number from 0 to 3, got 4."),
        (Range(0, 3, 1, 1, integer=True), 2.5, "x must be a whole number from 0 to 3, got 2.5."),
        (Range(0.0, 3.0, 1, 1), None, "x must be a number from 0 to 3, got None (NoneType)."),
        (Range(0.0, 3.0, 1, 1), -math.inf, "x must be a number from 0 to 3, got -inf."),
    ],
)
def test_range_check_messages(r, value, message):
    with pytest.raises(ParamError) as caught:
        r.check("x", value)
    assert str(caught.value) == message


def test_param_error_is_a_value_error():
    assert issubclass(ParamError, ValueError)


# ------------------------------------------------------- what the engine accepts (issue 13)


@pytest.mark.parametrize(
    "domain, message",
    [
        (Domain(0.0, 1.0, low_open=True), "x must be a number above 0 and at most 1"),
        (Domain(0, integer=True), "x must be a whole number of at least 0"),
        (Domain(0.0, low_open=True), "x must be a number above 0"),
        (Domain(-1, 2**64 - 1, integer=True),
         "x must be a whole number from -1 to 18446744073709551615"),
    ],
)  # fmt: skip
def test_domain_describes_its_ends(domain, message):
    assert domain.describe("x") == message


def test_domains_are_the_widest_limits_and_hold_every_sampling_params():
    assert set(DOMAINS) == set(RANGES)
    for name, r in RANGES.items():
        assert DOMAINS[name].check(name, r.low) == r.low
        assert DOMAINS[name].check(name, r.high) == r.high
    params = SamplingParams(top_p=1e-9, top_k=10**9, repetition_penalty=0.01, seed=2**64 - 1)
    assert (params.top_p, params.top_k, params.seed) == (1e-9, 10**9, 2**64 - 1)
    with pytest.raises(ParamError, match=r"^top_p must be a number above 0 and at most 1, got 0\."):
        SamplingParams(top_p=0)


def test_from_request_takes_defaults_from_the_ranges_and_the_context_as_the_cap():
    ranges = {"temperature": Range(0.1, 1.5, 0.7, 0.1)}
    params, drawn = SamplingParams.from_request(ranges, 100, seed=5)
    assert params.temperature == 0.7 and params.seed == 5 and drawn is None
    assert params.max_new_tokens == 100  # the default, 512, does not fit a context of 100
    assert SamplingParams.from_request(RANGES, 100, max_new_tokens=100)[0].max_new_tokens == 100
    with pytest.raises(ParamError, match=r"^max_new_tokens must be a whole number from 1 to 100"):
        SamplingParams.from_request(RANGES, 100, max_new_tokens=101)
    with pytest.raises(ParamError, match=r"^Unknown sampling parameter\(s\): min_p\.$"):
        SamplingParams.from_request(RANGES, 100, min_p=0.1)


def test_from_request_draws_a_seed_for_minus_one_only():
    params, drawn = SamplingParams.from_request(RANGES, 100, seed=-1)
    assert drawn is not None and params.seed == drawn and 0 <= drawn <= RANGES["seed"].high
    default = SamplingParams.from_request(RANGES, 1000, seed=None)
    assert default == (SamplingParams(), None) and default[0].seed == RANGES["seed"].default


def test_from_request_takes_as_many_stop_strings_as_the_engine_handles():
    stops = [str(i) for i in range(MAX_ENGINE_STOP_STRINGS)]
    assert SamplingParams.from_request(RANGES, 100, stop=stops)[0].stop == tuple(stops)
    with pytest.raises(ParamError, match=r"at most 64 strings .* got 65 strings\.$"):
        SamplingParams.from_request(RANGES, 100, stop=[*stops, "x"])
