"""Settings: the one place that reads space.yaml and the environment.

Owns: the `Settings` frozen dataclass (model, engine, device, context size, queue size, caches,
OpenVINO properties, the fold separator, slider ranges and presets, and the remote engine's
`RemoteSettings`, which that engine defines) and the precedence between its sources:
command-line flags over environment variables over space.yaml over built-in defaults.
Does not own: validating a request's sampling values (`sampling`), or loading anything.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from playground.chat_format import DEFAULT_FOLD_SEPARATOR
from playground.engines import ENGINE_KINDS
from playground.engines.remote import SERVERS as REMOTE_SERVERS
from playground.engines.remote import RemoteSettings
from playground.errors import UserError
from playground.sampling import RANGES, ParamError, Range, SamplingParams

SPACE_YAML = Path(__file__).resolve().parent.parent / "space.yaml"
# Only conversations and lessons are uploaded: no big files.
MAX_UPLOAD_BYTES = 2**20

# Environment variables, each overriding one space.yaml value.
ENV = {
    "model": "PLAYGROUND_MODEL",
    "engine": "PLAYGROUND_ENGINE",
    "device": "PLAYGROUND_DEVICE",
    "cache_dir": "PLAYGROUND_CACHE",
    "queue_size": "PLAYGROUND_QUEUE_SIZE",
    "max_concurrent": "PLAYGROUND_MAX_CONCURRENT",
    "session_capacity": "PLAYGROUND_SESSION_CAPACITY",
    "trusted_proxy_hops": "PLAYGROUND_TRUSTED_PROXY_HOPS",
    "prompt_lookup": "PLAYGROUND_PROMPT_LOOKUP",  # true or false
    "ov_config": "PLAYGROUND_OV_CONFIG",  # JSON object
    "kv_cache_gb": "PLAYGROUND_KV_CACHE_GB",
    "base_url": "PLAYGROUND_BASE_URL",  # the remote engine's server
}


class SettingsError(UserError, ValueError):
    """A bad space.yaml value, flag or environment variable; the message names it."""


@dataclass(frozen=True)
class Settings:
    model: str = "fakezeta/gemma-2-9b-it-ov-int4"
    model_given: bool = False  # set explicitly (flag or env): never fall back to another model
    engine: str = "genai"
    device: str = "CPU"
    context_size: int = 8192
    fallback_model: str = "tiny-tutor"
    max_input_tokens: int = 32768
    queue_size: int = 16
    # Generations the genai engine decodes together (continuous batching); the app's Gradio
    # concurrency limit is the engine's, so the queue holds the rest.
    max_concurrent: int = 4
    # Visitor sessions whose state Gradio keeps (least recently used go first). Each holds a
    # copy of every component's config, about 320 KB here, and one from an API client is never
    # closed: Gradio's own 10,000 would allow 3 GB.
    session_capacity: int = 1000
    # How many reverse proxies in front of the app append to X-Forwarded-For: its entry that
    # many from the end names the client (`ui.guard`). 0: the peer's own address, and the
    # header, which any client can write, is ignored. Unset: 1 on a Space (SPACE_ID is set;
    # its proxy appends one entry), else 0.
    trusted_proxy_hops: int = 0
    cache_dir: Path = Path.home() / ".cache" / "gemma2-playground"
    ov_config: Mapping[str, str] = field(default_factory=dict)
    # The genai engine's KV cache, in GB (10^9 bytes), allocated once; requests that don't fit
    # beside the running ones wait. 0: no budget (the cache grows as requests need it).
    kv_cache_gb: float = 0.0
    # Whether visitors may turn on prompt lookup (genai): its pipeline, built on first use, loads
    # the model a second time with its own KV cache, which a small Space may not have room for
    # (space.yaml turns it off; the code's default keeps the engines' own default).
    prompt_lookup: bool = True
    # Joins a folded system message to the first user message (chat_format.apply_system_policy).
    fold_separator: str = DEFAULT_FOLD_SEPARATOR
    ranges: Mapping[str, Range] = field(default_factory=lambda: dict(RANGES))
    presets: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    remote: RemoteSettings = field(default_factory=RemoteSettings)

    @property
    def max_input_chars(self) -> int:
        """A cheap cap on one request's text, checked before tokenizing (a 1 MB paste is
        refused without spending tokenizer time): 8 characters per allowed token. A text that
        passes is still held to the context size, in tokens, by the engine."""
        return self.max_input_tokens * 8

    @property
    def max_body_bytes(self) -> int:
        """The largest request body the server reads: room for one request's text at up to 8
        bytes a character (JSON escapes), and for an uploaded file (`MAX_UPLOAD_BYTES`), with
        64 KiB for the rest of the request."""
        return max(self.max_input_chars * 8, MAX_UPLOAD_BYTES) + 2**16

    @property
    def per_client(self) -> int:
        """Generations one client (IP address) may have running or waiting once every slot
        is in use: half the engine's slots, so a client cannot keep them all from others, and
        at least 2, so two visitors behind one address can each have a reply."""
        return max(2, self.max_concurrent // 2)

    def defaults(self) -> dict[str, int | float]:
        """Slider defaults, by control name."""
        return {name: r.default for name, r in self.ranges.items()}

    def preset_of(self, values: Mapping[str, Any]) -> str | None:
        """The first preset whose every value `values` (sampling values by name) holds, else
        None: the sidebar names the preset its values are, the defaults' included (issue 33)."""
        for name, preset in self.presets.items():
            if all(_same_number(values.get(key), value) for key, value in preset.items()):
                return name
        return None

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _same_number(value: Any, wanted: float) -> bool:
    # Equal within rounding, not bit for bit: a slider's value is a float the page computed.
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isclose(value, wanted, rel_tol=1e-9, abs_tol=1e-9)


def load_settings(
    path: Path = SPACE_YAML,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Settings from space.yaml, then the environment, then `overrides` (flags; None = unset)."""
    env = os.environ if env is None else env
    values = _from_yaml(path)
    for name, var in ENV.items():
        if env.get(var):
            values[name] = _ov_config_json(var, env[var]) if name == "ov_config" else env[var]
            if name == "model":
                values["model_given"] = True
    for name, value in overrides.items():
        if value is not None:
            values[name] = value
            if name == "model":
                values["model_given"] = True
    if "base_url" in values:
        values["remote"] = {**values.get("remote", {}), "base_url": values.pop("base_url")}
    if values.get("trusted_proxy_hops", "auto") == "auto":
        values["trusted_proxy_hops"] = 1 if env.get("SPACE_ID") else 0
    return _build(values)


def _ov_config_json(var: str, text: str) -> dict[str, Any]:
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise SettingsError(f"{var} must be a JSON object: {error}") from None
    if not isinstance(config, dict):
        raise SettingsError(f"{var} must be a JSON object, got {text!r}.")
    return config


def _from_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        message = " ".join(str(error).split())
        raise SettingsError(f"{path.name} is not valid YAML: {message}") from None
    if not isinstance(data, Mapping):
        raise SettingsError(f"{path.name}: expected a mapping at the top level.")
    for key in ("playground", "parameters"):
        if not isinstance(data.get(key) or {}, Mapping):
            raise SettingsError(f"{path.name}: {key} must be a mapping.")
    own = data.get("playground") or {}
    values: dict[str, Any] = {
        "model": (data.get("parameters") or {}).get("model"),
        "context_size": data.get("context_size"),
    }
    for key in (
        "engine",
        "device",
        "fallback_model",
        "max_input_tokens",
        "queue_size",
        "max_concurrent",
        "session_capacity",
        "trusted_proxy_hops",
        "fold_separator",
        "kv_cache_gb",
        "prompt_lookup",
    ):
        values[key] = own.get(key)
    values["ov_config"] = own.get("ov_config") or {}
    values["remote"] = own.get("remote") or {}
    values["ranges"] = _ranges(own.get("sampling") or {})
    values["presets"] = _presets(own.get("presets") or {}, values["ranges"])
    return {k: v for k, v in values.items() if v is not None}


def _ranges(sampling: Mapping[str, Mapping[str, float]]) -> dict[str, Range]:
    """space.yaml's slider ranges, each inside the hard limit of `sampling.RANGES`."""
    ranges = dict(RANGES)
    if not isinstance(sampling, Mapping):
        raise SettingsError("space.yaml: sampling must be a mapping of controls.")
    for name, spec in sampling.items():
        if name not in RANGES:
            raise SettingsError(f"space.yaml: unknown sampling control {name!r}.")
        hard = RANGES[name]
        if not isinstance(spec, Mapping):
            raise SettingsError(
                f"space.yaml: sampling.{name} must be a mapping of low, high, default and step."
            )
        try:
            low, high = hard.check(name, spec["low"]), hard.check(name, spec["high"])
            default = hard.check(name, spec["default"])
        except KeyError as error:
            raise SettingsError(f"space.yaml: sampling.{name}: missing {error}.") from None
        except ParamError as error:
            raise SettingsError(f"space.yaml: sampling.{name}: {error}") from None
        if not low <= default <= high:
            raise SettingsError(f"space.yaml: sampling.{name}: default outside low..high.")
        step = spec.get("step", hard.step)
        if isinstance(step, bool) or not isinstance(step, int | float) or not step > 0:
            raise SettingsError(
                f"space.yaml: sampling.{name}.step must be a positive number, got {step!r}."
            )
        ranges[name] = Range(low, high, default, step, hard.integer)
    return ranges


def _presets(presets: Any, ranges: Mapping[str, Range]) -> dict[str, dict[str, Any]]:
    """space.yaml's presets, each a set of sampling values valid under `ranges`."""
    if not isinstance(presets, Mapping):
        raise SettingsError("space.yaml: presets must be a mapping of name to sampling values.")
    checked = {}
    for name, values in presets.items():
        if not isinstance(values, Mapping):
            raise SettingsError(f"space.yaml: presets.{name} must be a mapping of values.")
        try:
            SamplingParams.checked(dict(ranges), **values)
        except (ParamError, TypeError) as error:
            raise SettingsError(f"space.yaml: presets.{name}: {error}") from None
        checked[str(name)] = dict(values)
    return checked


def _build(values: dict[str, Any]) -> Settings:
    for key in (
        "context_size",
        "max_input_tokens",
        "queue_size",
        "max_concurrent",
        "session_capacity",
    ):
        if key in values:
            values[key] = _whole(key, values[key], least=1)
    if "trusted_proxy_hops" in values:
        values["trusted_proxy_hops"] = _whole("trusted_proxy_hops", values["trusted_proxy_hops"])
    if "kv_cache_gb" in values:
        values["kv_cache_gb"] = _gigabytes(values["kv_cache_gb"])
    lookup = values.get("prompt_lookup", True)
    if isinstance(lookup, str) and lookup.lower() in ("true", "false"):  # from the environment
        values["prompt_lookup"] = lookup.lower() == "true"
    if not isinstance(values.get("prompt_lookup", True), bool):
        raise SettingsError(
            f"prompt_lookup must be true or false, got {values['prompt_lookup']!r}."
        )
    if "cache_dir" in values:
        values["cache_dir"] = Path(values["cache_dir"]).expanduser()
    if not isinstance(values.get("ov_config", {}), Mapping):
        raise SettingsError(f"ov_config must be a mapping, got {values['ov_config']!r}.")
    values["ov_config"] = {str(k): str(v) for k, v in dict(values.get("ov_config", {})).items()}
    if not isinstance(values.get("fold_separator", ""), str):
        raise SettingsError(
            f"fold_separator must be text, got {values['fold_separator']!r}; quote it in YAML."
        )
    if values.get("engine", "genai") not in ENGINE_KINDS:
        raise SettingsError(
            f"engine must be one of {', '.join(ENGINE_KINDS)}, got {values['engine']!r}."
        )
    values["remote"] = _remote(values.get("remote") or {})
    if values.get("engine") == "remote" and not values["remote"].base_url:
        raise SettingsError(
            "The remote engine needs the server's address: --base-url http://HOST:PORT/v1, "
            "PLAYGROUND_BASE_URL, or playground.remote.base_url in space.yaml."
        )
    return Settings(**values)


def _whole(key: str, value: Any, least: int = 0) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{key} must be a whole number, got {value!r}.") from None
    if number < least:
        raise SettingsError(f"{key} must be at least {least}, got {number}.")
    return number


def _gigabytes(value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        gb = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"kv_cache_gb must be a number of GB, got {value!r}.") from None
    if not 0 <= gb < float("inf"):
        raise SettingsError(f"kv_cache_gb must be 0 (no budget) or more, got {value!r}.")
    return gb


def _remote(remote: Any) -> RemoteSettings:
    """space.yaml's playground.remote (and --base-url), checked."""
    if not isinstance(remote, Mapping):
        raise SettingsError("playground.remote must be a mapping.")
    known = RemoteSettings.__dataclass_fields__
    if unknown := sorted(set(remote) - set(known)):
        raise SettingsError(f"playground.remote: unknown key {unknown[0]!r}.")
    values = {k: v for k, v in remote.items() if v is not None}
    for key in ("base_url", "served_model", "api_key_env", "server"):
        if not isinstance(values.get(key, ""), str):
            raise SettingsError(f"playground.remote.{key} must be text.")
    base_url = values.get("base_url", "").strip().rstrip("/")
    if base_url and not base_url.startswith(("http://", "https://")):
        raise SettingsError(
            f"The remote base URL must start with http:// or https://: {base_url!r}."
        )
    if values.get("server", "auto") not in REMOTE_SERVERS:
        raise SettingsError(f"playground.remote.server must be one of {', '.join(REMOTE_SERVERS)}.")
    for key, kind in (("max_concurrent", int), ("timeout_s", float)):
        if key in values:
            value = values[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
                raise SettingsError(f"playground.remote.{key} must be a number of at least 1.")
            values[key] = kind(value)
    return RemoteSettings(**{**values, "base_url": base_url})
