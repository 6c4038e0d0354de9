"""Settings: the one place that reads space.yaml and the environment.

Owns: the `Settings` frozen dataclass (model, engine, device, context size, queue size, caches,
OpenVINO properties, slider ranges and presets) and the precedence between its sources:
command-line flags over environment variables over space.yaml over built-in defaults.
Does not own: validating a request's sampling values (`sampling`), or loading anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from playground.sampling import RANGES, ParamError, Range

SPACE_YAML = Path(__file__).resolve().parent.parent / "space.yaml"

# Environment variables, each overriding one space.yaml value.
ENV = {
    "model": "PLAYGROUND_MODEL",
    "engine": "PLAYGROUND_ENGINE",
    "device": "PLAYGROUND_DEVICE",
    "cache_dir": "PLAYGROUND_CACHE",
    "queue_size": "PLAYGROUND_QUEUE_SIZE",
    "ov_config": "PLAYGROUND_OV_CONFIG",  # JSON object
}


class SettingsError(ValueError):
    """A bad space.yaml value, flag or environment variable; the message names it."""


@dataclass(frozen=True)
class Settings:
    model: str = "fakezeta/gemma-2-9b-it-ov-int4"
    model_given: bool = False  # set explicitly (flag or env): never fall back to another model
    engine: str = "genai"
    device: str = "CPU"
    context_size: int = 8192
    fallback_model: str = "tiny-random"
    max_input_tokens: int = 32768
    queue_size: int = 16
    cache_dir: Path = Path.home() / ".cache" / "gemma2-playground"
    ov_config: Mapping[str, str] = field(default_factory=dict)
    ranges: Mapping[str, Range] = field(default_factory=lambda: dict(RANGES))
    presets: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def defaults(self) -> dict[str, int | float]:
        """Slider defaults, by control name."""
        return {name: r.default for name, r in self.ranges.items()}

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


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
            values[name] = json.loads(env[var]) if name == "ov_config" else env[var]
            if name == "model":
                values["model_given"] = True
    for name, value in overrides.items():
        if value is not None:
            values[name] = value
            if name == "model":
                values["model_given"] = True
    return _build(values)


def _from_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    own = data.get("playground") or {}
    values: dict[str, Any] = {
        "model": (data.get("parameters") or {}).get("model"),
        "context_size": data.get("context_size"),
    }
    for key in ("engine", "device", "fallback_model", "max_input_tokens", "queue_size"):
        values[key] = own.get(key)
    values["ov_config"] = own.get("ov_config") or {}
    values["ranges"] = _ranges(own.get("sampling") or {})
    values["presets"] = own.get("presets") or {}
    return {k: v for k, v in values.items() if v is not None}


def _ranges(sampling: Mapping[str, Mapping[str, float]]) -> dict[str, Range]:
    """space.yaml's slider ranges, each inside the hard limit of `sampling.RANGES`."""
    ranges = dict(RANGES)
    for name, spec in sampling.items():
        if name not in RANGES:
            raise SettingsError(f"space.yaml: unknown sampling control {name!r}.")
        hard = RANGES[name]
        try:
            low, high = hard.check(name, spec["low"]), hard.check(name, spec["high"])
            default = hard.check(name, spec["default"])
        except (KeyError, ParamError) as error:
            raise SettingsError(f"space.yaml: sampling.{name}: {error}") from None
        if not low <= default <= high:
            raise SettingsError(f"space.yaml: sampling.{name}: default outside low..high.")
        ranges[name] = Range(low, high, default, spec.get("step", hard.step), hard.integer)
    return ranges


def _build(values: dict[str, Any]) -> Settings:
    try:
        for key in ("context_size", "max_input_tokens", "queue_size"):
            if key in values:
                values[key] = int(values[key])
                if values[key] < 1:
                    raise ValueError(f"{key} must be at least 1")
        if "cache_dir" in values:
            values["cache_dir"] = Path(values["cache_dir"]).expanduser()
        values["ov_config"] = {str(k): str(v) for k, v in dict(values["ov_config"]).items()}
    except (TypeError, ValueError) as error:
        raise SettingsError(f"Bad setting: {error}") from None
    if values.get("engine", "genai") not in ("genai", "optimum"):
        raise SettingsError(f"engine must be genai or optimum, got {values['engine']!r}.")
    return Settings(**values)
