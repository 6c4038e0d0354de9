"""Settings: the repo's space.yaml, the precedence of its sources, and bad values named."""

from pathlib import Path

import pytest
import yaml

from playground.sampling import RANGES, ParamError, Range, SamplingParams
from playground.settings import ENV, SPACE_YAML, Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def space(tmp_path):
    """Write a space.yaml: the repo's, with `playground` keys changed (None deletes a key)."""

    def write(text: str | None = None, **playground) -> Path:
        path = tmp_path / "space.yaml"
        if text is None:
            data = yaml.safe_load(SPACE_YAML.read_text())
            for key, value in playground.items():
                if value is None:
                    data["playground"].pop(key, None)
                else:
                    data["playground"][key] = value
            text = yaml.safe_dump(data)
        path.write_text(text)
        return path

    return write


def sampling_spec(name: str, **changes) -> dict:
    """The repo's space.yaml `playground.sampling` with `name`'s spec changed."""
    sampling = yaml.safe_load(SPACE_YAML.read_text())["playground"]["sampling"]
    sampling[name] = {**sampling[name], **changes}
    return sampling


# ----------------------------------------------------------------------------- the repo's YAML


def test_space_yaml_is_the_repos():
    assert SPACE_YAML == ROOT / "space.yaml"


def test_repo_space_yaml_has_the_localai_keys():
    data = yaml.safe_load(SPACE_YAML.read_text())
    assert data["name"] == "gemma-2-9b-it"
    assert data["backend"] == "transformers"
    assert data["parameters"]["model"] == "fakezeta/gemma-2-9b-it-ov-int4"
    assert data["context_size"] == 8192
    assert data["type"] == "OVModelForCausalLM"
    assert data["template"]["use_tokenizer_template"] is True


def test_load_settings_reads_the_repo_space_yaml():
    settings = load_settings(env={})
    assert settings.model == "fakezeta/gemma-2-9b-it-ov-int4"
    assert settings.model_given is False
    assert settings.context_size == 8192
    assert settings.engine == "genai"
    assert settings.device == "CPU"
    assert settings.fallback_model == "tiny-tutor"
    assert settings.max_input_tokens == 8192
    assert settings.queue_size == 16
    assert settings.ov_config == {}
    assert settings.cache_dir == Settings().cache_dir
    # The slider ranges are space.yaml's, not the hard limits (max_new_tokens is narrowed).
    assert settings.ranges["max_new_tokens"] == Range(1, 4096, 1024, 1, integer=True)
    assert RANGES["max_new_tokens"] != settings.ranges["max_new_tokens"]
    assert settings.ranges["temperature"] == Range(0.0, 2.0, 0.6, 0.05)
    assert settings.defaults() == {
        "max_new_tokens": 1024,
        "temperature": 0.6,
        "top_p": 0.9,
        "top_k": 50,
        "repetition_penalty": 1.2,
        "seed": 42,
    }


def test_sampling_defaults_follow_space_yaml():
    settings = load_settings(env={})
    params = SamplingParams.checked(settings.ranges)
    assert params.max_new_tokens == 1024  # space.yaml's default, not the built-in 512
    with pytest.raises(ParamError, match=r"^max_new_tokens must be a whole number from 1 to 4096"):
        SamplingParams.checked(settings.ranges, max_new_tokens=4097)
    assert SamplingParams.checked(max_new_tokens=4097).max_new_tokens == 4097  # hard limit 8192


# ------------------------------------------------------------------------------------ presets


def test_presets_exist_with_their_values():
    presets = load_settings(env={}).presets
    assert list(presets) == ["Gemma Space defaults", "Deterministic", "Creative"]
    assert dict(presets["Gemma Space defaults"]) == {
        "max_new_tokens": 1024,
        "temperature": 0.6,
        "top_p": 0.9,
        "top_k": 50,
        "repetition_penalty": 1.2,
    }
    assert presets["Deterministic"]["temperature"] == 0
    assert presets["Creative"]["temperature"] > presets["Gemma Space defaults"]["temperature"]


def test_every_preset_is_valid_under_the_ranges():
    settings = load_settings(env={})
    for name, values in settings.presets.items():
        params = SamplingParams.checked(settings.ranges, **values)
        for key, value in values.items():
            assert getattr(params, key) == value, (name, key)
    assert SamplingParams.checked(settings.ranges, **settings.presets["Deterministic"]).greedy
    assert not SamplingParams.checked(settings.ranges, **settings.presets["Creative"]).greedy


@pytest.mark.parametrize(
    "presets, message",
    [
        ({"Hot": {"temperature": 5}}, "presets.Hot: temperature must be a number from 0 to 2"),
        ({"Typo": {"top_q": 0.5}}, r"presets.Typo: Unknown sampling parameter\(s\): top_q"),
        ({"Flat": 0.5}, "presets.Flat must be a mapping"),
        (["Hot"], "presets must be a mapping"),
    ],
)
def test_bad_presets_are_refused_at_load(space, presets, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(space(presets=presets), env={})


def test_presets_are_checked_against_the_narrowed_ranges(space):
    sampling = sampling_spec("max_new_tokens", high=512, default=256)
    presets = {"Long": {"max_new_tokens": 1024}}
    with pytest.raises(SettingsError, match=r"presets.Long: max_new_tokens .* from 1 to 512"):
        load_settings(space(sampling=sampling, presets=presets), env={})


# --------------------------------------------------------------------------------- precedence


def test_env_overrides_yaml():
    env = {
        ENV["model"]: "tiny-random",
        ENV["engine"]: "optimum",
        ENV["device"]: "GPU",
        ENV["cache_dir"]: "/tmp/some-cache",
        ENV["queue_size"]: "3",
        ENV["max_concurrent"]: "2",
        ENV["ov_config"]: '{"KV_CACHE_PRECISION": "u8", "NUM_STREAMS": 1}',
    }
    settings = load_settings(env=env)
    assert settings.model == "tiny-random"
    assert settings.model_given is True
    assert settings.engine == "optimum"
    assert settings.device == "GPU"
    assert settings.cache_dir == Path("/tmp/some-cache")
    assert settings.queue_size == 3
    assert settings.max_concurrent == 2
    assert settings.ov_config == {"KV_CACHE_PRECISION": "u8", "NUM_STREAMS": "1"}
    assert settings.context_size == 8192  # untouched: still space.yaml's


def test_env_var_names():
    assert ENV == {
        "model": "PLAYGROUND_MODEL",
        "engine": "PLAYGROUND_ENGINE",
        "device": "PLAYGROUND_DEVICE",
        "cache_dir": "PLAYGROUND_CACHE",
        "queue_size": "PLAYGROUND_QUEUE_SIZE",
        "max_concurrent": "PLAYGROUND_MAX_CONCURRENT",
        "session_capacity": "PLAYGROUND_SESSION_CAPACITY",
        "trusted_proxy_hops": "PLAYGROUND_TRUSTED_PROXY_HOPS",
        "prompt_lookup": "PLAYGROUND_PROMPT_LOOKUP",
        "ov_config": "PLAYGROUND_OV_CONFIG",
        "kv_cache_gb": "PLAYGROUND_KV_CACHE_GB",
        "base_url": "PLAYGROUND_BASE_URL",
    }


def test_empty_env_values_are_unset():
    settings = load_settings(env={ENV["model"]: "", ENV["engine"]: ""})
    assert settings.model == "fakezeta/gemma-2-9b-it-ov-int4"
    assert settings.model_given is False
    assert settings.engine == "genai"


def test_overrides_beat_env():
    env = {ENV["model"]: "tiny-random", ENV["engine"]: "optimum", ENV["queue_size"]: "3"}
    settings = load_settings(env=env, model="mid-random", engine="genai", queue_size=5)
    assert (settings.model, settings.engine, settings.queue_size) == ("mid-random", "genai", 5)
    assert settings.model_given is True


def test_none_overrides_are_unset():
    env = {ENV["engine"]: "optimum"}
    settings = load_settings(env=env, model=None, engine=None, ov_config=None)
    assert settings.engine == "optimum"
    assert settings.model == "fakezeta/gemma-2-9b-it-ov-int4"
    assert settings.model_given is False


def test_model_given_only_from_env_or_override():
    assert load_settings(env={}).model_given is False
    assert load_settings(env={ENV["engine"]: "optimum"}, device="CPU").model_given is False
    assert load_settings(env={ENV["model"]: "tiny-random"}).model_given is True
    assert load_settings(env={}, model="tiny-random").model_given is True


def test_env_none_reads_os_environ(monkeypatch):
    monkeypatch.setenv("PLAYGROUND_ENGINE", "optimum")
    monkeypatch.setenv("PLAYGROUND_MODEL", "tiny-random")
    settings = load_settings()
    assert settings.engine == "optimum" and settings.model_given is True


def test_override_ov_config_is_stringified():
    settings = load_settings(env={}, ov_config={"INFERENCE_PRECISION_HINT": "f32", "N": 2})
    assert settings.ov_config == {"INFERENCE_PRECISION_HINT": "f32", "N": "2"}


def test_yaml_ov_config(space):
    settings = load_settings(space(ov_config={"KV_CACHE_PRECISION": "u8"}), env={})
    assert settings.ov_config == {"KV_CACHE_PRECISION": "u8"}


def test_prompt_lookup_is_off_on_the_space_and_can_be_allowed(space):
    # Issue 34, item 13: one anonymous call built a second copy of the model.
    assert load_settings(env={}).prompt_lookup is False  # the repo's space.yaml
    assert load_settings(space(prompt_lookup=True), env={}).prompt_lookup is True
    assert load_settings(env={"PLAYGROUND_PROMPT_LOOKUP": "true"}).prompt_lookup is True
    with pytest.raises(SettingsError, match="prompt_lookup must be true or false"):
        load_settings(space(prompt_lookup="no"), env={})


def test_trusted_proxy_hops_default_to_the_space_and_are_checked(space):
    assert load_settings(env={}).trusted_proxy_hops == 0  # facing clients: trust no header
    assert load_settings(env={"SPACE_ID": "user/space"}).trusted_proxy_hops == 1
    assert load_settings(space(trusted_proxy_hops=2), env={"SPACE_ID": "x"}).trusted_proxy_hops == 2
    hops = {"PLAYGROUND_TRUSTED_PROXY_HOPS": "1"}
    assert load_settings(env=hops).trusted_proxy_hops == 1
    with pytest.raises(SettingsError, match="trusted_proxy_hops must be at least 0"):
        load_settings(space(trusted_proxy_hops=-1), env={})
    with pytest.raises(SettingsError, match="trusted_proxy_hops must be a whole number"):
        load_settings(space(trusted_proxy_hops="two"), env={})


def test_settings_with_replaces_a_field():
    settings = load_settings(env={})
    other = settings.with_(engine="optimum")
    assert other.engine == "optimum" and settings.engine == "genai"
    assert other.ranges == settings.ranges


def test_a_yaml_without_a_playground_section_gets_the_built_in_defaults(space):
    settings = load_settings(space("context_size: 4096\nparameters: {model: some/model}\n"), env={})
    assert settings.model == "some/model" and settings.context_size == 4096
    assert settings.ranges == RANGES
    assert settings.presets == {}
    assert settings.queue_size == Settings().queue_size


# --------------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    "playground, message",
    [
        (
            {"sampling": {"min_p": {"low": 0, "high": 1, "default": 0.1, "step": 0.1}}},
            "unknown sampling control 'min_p'",
        ),
        (
            {"sampling": sampling_spec("temperature", low=0.5, high=1.0, default=1.5)},
            r"sampling\.temperature: default outside low\.\.high",
        ),
        (
            {"sampling": sampling_spec("top_p", low=0.0)},
            r"sampling\.top_p: top_p must be a number from 0\.05 to 1, got 0",
        ),
        (
            {"sampling": sampling_spec("max_new_tokens", high=100000)},
            r"sampling\.max_new_tokens: max_new_tokens must be a whole number from 1 to 8192",
        ),
        (
            {"sampling": sampling_spec("top_k", default=2.5)},
            r"sampling\.top_k: top_k must be a whole number",
        ),
        (
            {"sampling": sampling_spec("seed", low=None)},
            r"sampling\.seed: seed must be a whole number .* got None",
        ),
        (
            {"sampling": {"temperature": {"low": 0, "default": 0.5}}},
            r"sampling\.temperature: missing 'high'",
        ),
        ({"sampling": {"temperature": 0.5}}, r"sampling\.temperature must be a mapping"),
        (
            {"sampling": sampling_spec("top_p", step=0)},
            r"sampling\.top_p\.step must be a positive number, got 0",
        ),
        ({"engine": "torch"}, "engine must be one of .*, got 'torch'"),
        ({"queue_size": 0}, "queue_size must be at least 1"),
        ({"queue_size": "many"}, "queue_size must be a whole number, got 'many'"),
        ({"max_input_tokens": 1.5}, "max_input_tokens must be a whole number, got 1.5"),
        ({"ov_config": ["KV_CACHE_PRECISION"]}, "ov_config must be a mapping"),
    ],
)
def test_bad_yaml_values_name_the_key(space, playground, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(space(**playground), env={})


def test_bad_context_size_names_the_key(space):
    with pytest.raises(SettingsError, match="context_size must be at least 1"):
        load_settings(space("context_size: 0\n"), env={})


@pytest.mark.parametrize(
    "text, message",
    [
        ("playground: [\n", "space.yaml is not valid YAML"),
        ("- a list\n", "expected a mapping at the top level"),
        ("playground: 3\n", "playground must be a mapping"),
    ],
)
def test_unreadable_yaml_is_a_settings_error(space, text, message):
    with pytest.raises(SettingsError, match=message) as caught:
        load_settings(space(text), env={})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"PLAYGROUND_OV_CONFIG": "{not json"}, "PLAYGROUND_OV_CONFIG must be a JSON object"),
        ({"PLAYGROUND_OV_CONFIG": '["a"]'}, "PLAYGROUND_OV_CONFIG must be a JSON object"),
        ({"PLAYGROUND_QUEUE_SIZE": "x"}, "queue_size must be a whole number, got 'x'"),
        ({"PLAYGROUND_QUEUE_SIZE": "0"}, "queue_size must be at least 1"),
        ({"PLAYGROUND_ENGINE": "torch"}, "engine must be one of .*, got 'torch'"),
    ],
)
def test_bad_env_values_are_settings_errors(env, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(env=env)


def test_bad_override_is_a_settings_error():
    with pytest.raises(SettingsError, match=r"engine must be one of .*, got 'torch'"):
        load_settings(env={}, engine="torch")


def test_settings_error_is_a_value_error():
    assert issubclass(SettingsError, ValueError)


# ------------------------------------------------------------------ the fold separator (issue 13)


def test_fold_separator_defaults_to_a_blank_line_from_space_yaml():
    assert load_settings(env={}).fold_separator == "\n\n"
    assert yaml.safe_load(SPACE_YAML.read_text())["playground"]["fold_separator"] == "\n\n"
    assert Settings().fold_separator == "\n\n"


def test_fold_separator_from_yaml_and_flags(space):
    assert load_settings(space(fold_separator="\n"), env={}).fold_separator == "\n"
    flagged = load_settings(space(fold_separator="\n"), env={}, fold_separator=" ")
    assert flagged.fold_separator == " "


@pytest.mark.parametrize("value", [1, ["\n"], True])
def test_fold_separator_must_be_text(space, value):
    with pytest.raises(SettingsError, match="fold_separator must be text"):
        load_settings(space(fold_separator=value), env={})
