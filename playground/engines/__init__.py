"""The engines: one module per kind, this registry, and the per-process cache.

Owns: the one list of engine kinds (`ENGINE_KINDS`: every module of this package but `base`
and a kind's own helpers, named with `_`, each defining `ENGINE`, so adding an engine is adding
one file), the `EngineSpec` that keys the
cache, loading an engine (`load_engine`), the process's one engine per spec (`get_engine`), and
`open_engine`, which turns `Settings` into the served engine (with the fallback notice), and
`open_peer`, the remote server beside it for Compare, when one is configured too.
Does not own: the contract every engine keeps (`engines.base`, re-exported here), or what any
one engine does (its own module).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from playground.engines.base import (
    AS_SENT,
    ContextOverflowError,
    Delivery,
    Engine,
    EngineError,
    EngineInfo,
    EngineStatus,
    EngineStopped,
    Generation,
    GenerationResult,
    NativeFigures,
    Prompt,
    Reading,
    StopReason,
    TokenScore,
)

if TYPE_CHECKING:
    from playground.engines.remote import RemoteSettings
    from playground.settings import Settings

__all__ = [
    "AS_SENT",
    "ENGINE_KINDS",
    "ContextOverflowError",
    "Delivery",
    "Engine",
    "EngineError",
    "EngineInfo",
    "EngineSpec",
    "EngineStatus",
    "EngineStopped",
    "Generation",
    "GenerationResult",
    "NativeFigures",
    "Prompt",
    "Reading",
    "StopReason",
    "TokenScore",
    "engine_class",
    "get_engine",
    "load_engine",
    "open_engine",
    "open_peer",
]

# The kinds, by module name; the first is the default. A module named with `_` is a kind's own
# helper (`_genai_process`, the genai engine's child process), not a kind.
_OTHERS = (
    m.name for m in pkgutil.iter_modules(__path__)
    if m.name not in ("base", "genai") and not m.name.startswith("_")
)  # fmt: skip
ENGINE_KINDS = ("genai", *sorted(_OTHERS))
log = logging.getLogger(__name__)


def engine_class(kind: str) -> type[Engine]:
    """The engine class of `kind` (its module imports its native library only when used)."""
    if kind not in ENGINE_KINDS:
        raise EngineError(f"Unknown engine {kind!r}: choose one of {', '.join(ENGINE_KINDS)}.")
    return importlib.import_module(f"{__name__}.{kind}").ENGINE


@dataclass(frozen=True)
class EngineSpec:
    """Everything that shapes an engine, and so the key of the per-process cache: a caller
    asking for another config or context size never gets this one by mistake."""

    folder: str  # resolved, so two spellings of one folder share an engine
    kind: str = "genai"
    device: str = "CPU"
    ov_config: tuple[tuple[str, str], ...] = ()
    context_size: int = 8192
    max_concurrent: int = 4
    remote: RemoteSettings | None = None  # the server, for the remote engine
    kv_cache_gb: float = 0.0  # the genai engine's KV-cache budget; 0 = none (`memory`)
    prompt_lookup: bool = True  # the genai engine may build prompt lookup's second pipeline

    @classmethod
    def of(
        cls,
        folder: Path,
        kind: str = "genai",
        device: str = "CPU",
        *,
        ov_config: dict[str, str] | None = None,
        context_size: int = 8192,
        max_concurrent: int = 4,
        remote: RemoteSettings | None = None,
        kv_cache_gb: float = 0.0,
        prompt_lookup: bool = True,
    ) -> EngineSpec:
        """The spec from friendly arguments: `max_concurrent` is how many generations run at
        once (the optimum engine runs one); `remote` names the remote engine's server;
        `kv_cache_gb` bounds the genai engine's KV cache; `prompt_lookup` False refuses prompt
        lookup (its pipeline loads the model a second time)."""
        config = tuple(sorted((str(k), str(v)) for k, v in (ov_config or {}).items()))
        return cls(
            str(Path(folder).resolve()), kind, device, config, context_size, max_concurrent,
            remote if kind == "remote" else None, kv_cache_gb if kind == "genai" else 0.0,
            prompt_lookup,
        )  # fmt: skip


_engines: dict[EngineSpec, Engine] = {}
_engines_lock = threading.Lock()


def load_engine(
    folder: Path,
    kind: str = "genai",
    device: str = "CPU",
    *,
    cache_dir: Path,
    model_name: str | None = None,
    **options: Any,
) -> Engine:
    """Create an engine (no caching); `get_engine` is the cached way in. `options` are
    `EngineSpec.of`'s."""
    return _create(EngineSpec.of(folder, kind, device, **options), cache_dir, model_name)


def get_engine(
    folder: Path,
    kind: str = "genai",
    device: str = "CPU",
    *,
    cache_dir: Path,
    model_name: str | None = None,
    **options: Any,
) -> Engine:
    """The process's one engine for these arguments (their `EngineSpec`), created once."""
    spec = EngineSpec.of(folder, kind, device, **options)
    with _engines_lock:
        if spec not in _engines:
            _engines[spec] = _create(spec, cache_dir, model_name)
        return _engines[spec]


def _create(spec: EngineSpec, cache_dir: Path, model_name: str | None) -> Engine:
    import openvino as ov

    from playground.tokens import Tokenizer

    folder = Path(spec.folder)
    cls = engine_class(spec.kind)
    ov_cache = cache_dir / "ov_cache" / folder.name  # per model: "cache used" is true
    cache_used = cls.compiles and ov_cache.is_dir() and any(ov_cache.iterdir())
    if cls.compiles:
        ov_cache.mkdir(parents=True, exist_ok=True)
    config = {"CACHE_DIR": str(ov_cache), **dict(spec.ov_config)}
    start = time.perf_counter()
    try:
        engine = cls.create(folder, spec, Tokenizer(folder), config)
    except RuntimeError as error:  # OpenVINO's: a device or ov_config this CPU can't honour
        if isinstance(error, EngineError) or not cls.compiles:
            raise
        said = [line for line in str(error).splitlines() if line.strip()]
        raise EngineError(
            f"OpenVINO could not load {model_name or folder.name} on {spec.device} with ov_config "
            f"{dict(spec.ov_config)}: {said[-1] if said else type(error).__name__}"
        ) from error
    load_s = time.perf_counter() - start
    engine.info = EngineInfo(
        model_name or str(folder), spec.kind, spec.device, ov.get_version(), load_s, cache_used
    )
    return engine


def open_engine(settings: Settings) -> tuple[Engine, str | None]:
    """The cached engine for `settings`, and a notice when it had to fall back.

    The default model falls back to `settings.fallback_model` when it can't be had (no network
    and no cached copy); a model given explicitly never does. The remote engine needs only the
    model's tokenizer files here: the weights are the server's.
    """
    from playground.models import resolve_or_fall_back

    remote = settings.engine == "remote"
    folder, name, notice = resolve_or_fall_back(
        settings.model,
        settings.fallback_model,
        cache_dir=settings.cache_dir,
        may_fall_back=not settings.model_given and not remote,
        weights=not remote,
    )
    engine = get_engine(
        folder,
        settings.engine,
        settings.device,
        cache_dir=settings.cache_dir,
        context_size=settings.context_size,
        ov_config=dict(settings.ov_config),
        model_name=name,
        max_concurrent=settings.remote.max_concurrent if remote else settings.max_concurrent,
        remote=settings.remote if remote else None,
        kv_cache_gb=settings.kv_cache_gb,
        prompt_lookup=settings.prompt_lookup,
    )
    return engine, notice


def open_peer(settings: Settings, engine: Engine) -> tuple[Engine | None, str | None]:
    """The remote engine beside the served `engine`, for Compare's columns only: on the server
    `settings.remote` names, with the served model's own tokenizer files (`engine.folder`:
    the same model, so a column's plan is the same on both). (None, None) when no server is
    configured or `engine` already is the remote one; (None, reason) when the server can't be
    had at start, so that the app still starts and the Compare tab says why in one line. The
    reason leaves the server's address to the operator's log, as the remote engine's
    visitor-facing messages do."""
    if not settings.remote.base_url or engine.kind == "remote":
        return None, None
    try:
        peer = get_engine(
            engine.folder,
            "remote",
            cache_dir=settings.cache_dir,
            context_size=engine.context_size,
            model_name=engine.info.model if engine.info else None,
            max_concurrent=settings.remote.max_concurrent,
            remote=settings.remote,
        )
    except (EngineError, ImportError) as error:
        log.warning("the remote peer is unavailable: %s", error)
        return None, (
            f"The remote server configured beside the {engine.kind} engine could not be used at "
            f"start (the operator's log says why): Compare runs on the {engine.kind} engine only."
        )
    return peer, None
