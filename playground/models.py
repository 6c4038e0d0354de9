"""Model resolution: turn a model spec into a local OpenVINO IR folder.

Owns: the kinds of spec (a Hugging Face repo id, a local folder, the shipped trained model
`tiny-tutor`, the built-in synthetic models `tiny-random`, `mid-random` and
`gemma2-9b-slice[:N]`), the offline build of those synthetic Gemma-2 models, the fallback rule
(the default model falls back to the shipped one, with a notice; a model given explicitly never
does), and the one-time conversion of a folder's Hugging Face tokenizer to OpenVINO tokenizer IRs.
Does not own: running a model (see `engines`), reading settings or the environment (the cache
folder is passed in), or chat templates (see `chat_format`).

Heavy imports (torch, transformers, optimum) happen only inside the build functions, so resolving
an existing folder stays cheap.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from playground.chat_format import CONTROL_TOKEN_TEXTS, GEMMA2_CHAT_TEMPLATE
from playground.errors import UserError
from playground.tutor import TUTOR_DIR

OV_TOKENIZER_FILES = ("openvino_tokenizer.xml", "openvino_detokenizer.xml")
MODEL_XML = "openvino_model.xml"

# Gemma-2's special tokens at the real model's ids, so that id-level tests hold for the real
# model too (google/gemma-2-9b-it tokenizer.json: <pad> 0, <eos> 1, <bos> 2, <unk> 3, <mask> 4,
# [@BOS@] 5, <unused0..98> 6-104, <start_of_turn> 106, <end_of_turn> 107).
PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3
START_OF_TURN_ID, END_OF_TURN_ID = 106, 107
_LEADING_TOKENS = (
    ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "[@BOS@]"]
    + [f"<unused{i}>" for i in range(100)]
    + ["<start_of_turn>", "<end_of_turn>"]
)


@dataclass(frozen=True)
class SyntheticSpec:
    """Shape of a random-weight Gemma-2 the project builds itself."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    sliding_window: int
    group_size: int
    # The checkpoint's dtype before export: google/gemma-2-9b-it's is bfloat16, and optimum-intel
    # exports a 16-bit checkpoint by its own path (loaded in 16 bits, patched), as for the 9B.
    dtype: str = "float32"


SLICE = "gemma2-9b-slice"
# Bumped whenever the build recipe changes, so a cached build of an older recipe is not reused.
SYNTHETIC_RECIPE = 2

SYNTHETIC_MODELS: dict[str, SyntheticSpec] = {
    # Exports cleanly and builds in seconds; the default group size 128 fails on a 64-wide model.
    "tiny-random": SyntheticSpec(1024, 64, 128, 2, 4, 2, 16, 32, 32),
    # Large enough that a token costs real compute (~250M params), for the benchmark.
    "mid-random": SyntheticSpec(32768, 1024, 4096, 12, 8, 4, 128, 512, 128),
    # google/gemma-2-9b-it's exact widths (config.json: vocab 256,000, hidden 3,584, MLP 14,336,
    # 16 heads and 8 KV heads of 256, window 4,096), in 2 of its 42 layers: what a token costs
    # the real model, per layer and for the 256,000-wide output layer (bench --project 9b).
    SLICE: SyntheticSpec(256000, 3584, 14336, 2, 16, 8, 256, 4096, 128, "bfloat16"),
}
SLICE_LAYERS = 42  # the real model's; `gemma2-9b-slice:N` builds N of them (1..42)


# The shipped model, trained on the chat format (playground/tutor): served when the default
# model can't be had. Its folder is in the repo, so it needs no build and no network.
TUTOR = "tiny-tutor"
BUILTIN_MODELS = (TUTOR, *SYNTHETIC_MODELS)


class ModelUnavailableError(UserError, RuntimeError):
    """A model spec that cannot be turned into a local folder; the message is for people."""


# What a served model needs here when its weights run elsewhere (the remote engine): the
# tokenizer, its template and end ids, and the config.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                   "generation_config.json", "config.json", "special_tokens_map.json")  # fmt: skip


def resolve_model(spec: str, cache_dir: Path, *, weights: bool = True) -> Path:
    """Return a local OpenVINO IR folder for `spec`, building or fetching it if needed; with
    `weights=False`, a folder with its tokenizer files only (a repo's weights are not fetched)."""
    if spec == TUTOR:
        folder = TUTOR_DIR
    elif synthetic_spec(spec) is not None:
        folder = build_synthetic_model(spec, cache_dir)
    elif Path(spec).expanduser().is_dir():
        folder = Path(spec).expanduser().resolve()
    elif looks_like_repo_id(spec):
        folder = download_snapshot(spec, files=None if weights else TOKENIZER_FILES)
    else:
        raise ModelUnavailableError(
            f"Model {spec!r} is neither a local folder, a Hugging Face repo id (owner/name) "
            f"nor one of the built-in models ({', '.join(BUILTIN_MODELS)})."
        )
    if not weights:
        if not (folder / "tokenizer.json").is_file():
            raise ModelUnavailableError(
                f"{folder} holds no tokenizer.json; the playground needs one."
            )
        return folder
    if not (folder / MODEL_XML).is_file():
        raise ModelUnavailableError(
            f"{folder} holds no {MODEL_XML}: it is not an OpenVINO IR export. Export one with "
            "`optimum-cli export openvino --weight-format int4 ...` or pass another folder."
        )
    ensure_ov_tokenizers(folder)
    return folder


def resolve_or_fall_back(
    spec: str, fallback: str, *, cache_dir: Path, may_fall_back: bool, weights: bool = True
) -> tuple[Path, str, str | None]:
    """`spec`'s folder, or, when it can't be had and `may_fall_back` (the default model, not one
    given explicitly), `fallback`'s: returns the folder, the name served, and a notice saying
    why when it fell back. `weights=False` fetches the tokenizer files only."""
    try:
        return resolve_model(spec, cache_dir, weights=weights), spec, None
    except ModelUnavailableError as error:
        if not may_fall_back or spec == fallback:
            raise
        notice = fallback_notice(spec, fallback, error)
        return resolve_model(fallback, cache_dir), fallback, notice


def fallback_notice(wanted: str, served: str, error: Exception) -> str:
    """What the banner, the Model tab and the CLI say when `served` stands in for `wanted`: a
    short first line (who answers, and that the real model is missing), then the details in
    plain words (why, what `served` can do, how to get the real one). The exception's class
    and message go to the server log only: they mean nothing to a visitor (issue 33)."""
    import logging

    cause = error.__cause__ or error
    logging.getLogger(__name__).warning(
        "%s could not be had (%s: %s); serving %s", wanted, type(cause).__name__, cause, served
    )
    what = (
        "a 1M-parameter Gemma-2 trained on the chat format only: it greets you, does sums from 0 "
        "to 12, repeats, reverses and uppercases words, follows a folded system prompt and "
        "explains the chat format, and knows nothing else"
        if served == TUTOR
        else "a tiny Gemma-2 with random weights: its replies are gibberish"
    )
    # By the cause's kind, not its module: huggingface_hub and its HTTP clients name theirs.
    kinds = {kind.__name__ for kind in type(cause).__mro__}
    if "GatedRepoError" in kinds or "RepositoryNotFoundError" in kinds:
        why = (
            "is not downloaded on this server, and the Hugging Face Hub would not give it "
            "(the name is wrong, or the model needs a login)"
        )
    elif "ModelUnavailableError" in kinds:  # a folder, but no model in it
        why = "could not be loaded on this server"
    else:  # no copy here, and no answer from the Hub (offline, no network, a silent proxy)
        why = (
            "is not downloaded on this server, and the Hugging Face Hub could not be reached "
            "to download it"
        )
    return (
        f"You are talking to {served}, a small demo model: {wanted} is not available here.\n"
        f"The real model {wanted} {why}. Until it is, the playground serves {served}, {what}: "
        f"its mistakes are its own, not Gemma-2's. To serve the real model, run "
        f"`hf download {wanted}` on a machine with network (or set HF_HOME to a cache that "
        "holds it) and restart."
    )


def looks_like_repo_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "/", "~"))


HUB_TIMEOUT_S = 10  # the longest silence of the Hub before it counts as unreachable
# What a user can do instead of downloading, for the model a command serves.
SERVE_INSTEAD = (
    f"pass a local folder with --model PATH, or try the playground with --model {TUTOR}, the "
    "small model that ships with it"
)


def download_snapshot(
    repo_id: str, instead: str = SERVE_INSTEAD, files: tuple[str, ...] | None = None
) -> Path:
    """The local snapshot of the Hub repo `repo_id` (only `files`, when given), fetched or
    cached; `instead` says what else the user can do when neither can be had."""
    # huggingface_hub honours HF_HOME and HF_HUB_OFFLINE itself, and returns the cached snapshot
    # when the hub is unreachable but a copy exists.
    from huggingface_hub import snapshot_download

    try:
        # A silent Hub leaves only the cache: snapshot_download's own first request has no
        # timeout, and would wait forever.
        cached_only = _hub_is_silent(repo_id)
        return Path(
            snapshot_download(
                repo_id,
                etag_timeout=HUB_TIMEOUT_S,
                local_files_only=cached_only,
                allow_patterns=files,
            )
        )
    except Exception as error:  # ConnectError, LocalEntryNotFoundError, RepositoryNotFound, ...
        raise ModelUnavailableError(
            f"Could not get the model {repo_id!r}: neither the Hugging Face Hub nor a cached copy "
            f"could be reached ({type(error).__name__}). Ways forward: download it ahead with "
            f"`hf download {repo_id}` on a machine with network (or set HF_HOME to a cache that "
            f"holds it), {instead}."
        ) from error


def _hub_is_silent(repo_id: str) -> bool:
    """Whether the Hub accepts connections but does not answer within HUB_TIMEOUT_S (a proxy or
    firewall that swallows requests); any other failure is snapshot_download's to report."""
    import httpx
    from huggingface_hub import HfApi

    try:
        HfApi().repo_info(repo_id, timeout=HUB_TIMEOUT_S)
    except httpx.TimeoutException:
        return True
    except Exception:  # offline mode, refused, not found, gated: reported by snapshot_download
        return False
    return False


def ensure_ov_tokenizers(folder: Path) -> Path:
    """Make sure `folder` has OpenVINO tokenizer IRs, converting its HF tokenizer once if not.

    Older exports lack them. The IRs are written beside the model, so the conversion happens once.
    """
    if all((folder / name).is_file() for name in OV_TOKENIZER_FILES):
        return folder
    import openvino as ov
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(folder)
    ov_tokenizer, ov_detokenizer = convert_tokenizer(hf_tokenizer, with_detokenizer=True)
    ov.save_model(ov_tokenizer, folder / OV_TOKENIZER_FILES[0])
    ov.save_model(ov_detokenizer, folder / OV_TOKENIZER_FILES[1])
    return folder


def synthetic_spec(name: str) -> SyntheticSpec | None:
    """The shape of the synthetic model `name` (`gemma2-9b-slice:N` is the slice with N layers),
    or None when `name` is not one."""
    if name in SYNTHETIC_MODELS:
        return SYNTHETIC_MODELS[name]
    base, _, layers = name.partition(":")
    if base != SLICE or not layers.isdigit() or not 1 <= int(layers) <= SLICE_LAYERS:
        return None
    return replace(SYNTHETIC_MODELS[SLICE], num_hidden_layers=int(layers))


def synthetic_folder_name(name: str) -> str:
    """The cache folder name of the synthetic model `name`'s builds (and its peers' files): one
    per shape, so `gemma2-9b-slice` and `gemma2-9b-slice:2` share theirs."""
    spec = synthetic_spec(name)
    if name.partition(":")[0] == SLICE and spec is not None:
        name = f"{SLICE}-{spec.num_hidden_layers}L"
    return f"{name}-r{SYNTHETIC_RECIPE}"


def build_synthetic_model(name: str, cache_dir: Path) -> Path:
    """Build the random-weight Gemma-2 `name` once, offline and deterministically; return it."""
    target = cache_dir / "models" / synthetic_folder_name(name)
    if (target / MODEL_XML).is_file() and all((target / f).is_file() for f in OV_TOKENIZER_FILES):
        return target
    spec = synthetic_spec(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling temp folder and rename, so a concurrent or interrupted build never
    # leaves a half-written model where a reader looks.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        work = Path(tmp)
        _build(spec, work / "hf", work / "ov")
        try:
            os.replace(work / "ov", target)
        except OSError:
            if not (target / MODEL_XML).is_file():  # lost a race only if the winner finished
                shutil.rmtree(target, ignore_errors=True)
                os.replace(work / "ov", target)
    return target


def _build(spec: SyntheticSpec, hf_dir: Path, ov_dir: Path) -> None:
    save_synthetic_checkpoint(spec, hf_dir)
    export_ir(hf_dir, ov_dir, bits=4, group_size=spec.group_size)


def save_synthetic_checkpoint(spec: SyntheticSpec, hf_dir: Path) -> None:
    """Write the Hugging Face checkpoint (weights and tokenizer) of a synthetic model, before its
    OpenVINO export: the same weights every time (seeded), for peers that convert it themselves."""
    import torch

    tokenizer = _train_tokenizer(spec.vocab_size)
    torch.manual_seed(0)
    # Made in its own dtype: the slice's 1.6B+ parameters in float32 and again in bfloat16 would
    # double the build's memory.
    default = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, spec.dtype))
    try:
        model = _new_model(spec)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)


def _new_model(spec: SyntheticSpec):
    return new_gemma2(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        sliding_window=spec.sliding_window,
        dtype=spec.dtype,
    ).eval()


def new_gemma2(**shape: Any):
    """A fresh Gemma2ForCausalLM of `shape` (sizes, and any Gemma2Config option) with Gemma-2's
    choices: logit softcapping (unless `shape` overrides it), tied embeddings, the real special
    ids and end tokens."""
    from transformers import Gemma2Config, Gemma2ForCausalLM, GenerationConfig

    config = Gemma2Config(
        **{"attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, **shape},
        query_pre_attn_scalar=shape["head_dim"],
        tie_word_embeddings=True,
        max_position_embeddings=8192,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=BOS_ID,
    )
    model = Gemma2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=BOS_ID, eos_token_id=[EOS_ID, END_OF_TURN_ID], pad_token_id=PAD_ID
    )
    return model


def export_ir(
    hf_dir: Path,
    ov_dir: Path,
    *,
    bits: int,
    group_size: int,
    sym: bool = False,
    all_layers: bool | None = None,
    ratio: float = 1.0,
) -> None:
    """Export a Hugging Face checkpoint to an OpenVINO IR folder with u4, u8 or f16 weights
    (`bits` 4, 8 or 16) and OpenVINO tokenizers (optimum-intel and nncf; int8 is per channel).
    `sym` makes the weights symmetric (no zero points); `ratio` is the share of int4 layers, the
    rest int8; `all_layers` puts the embedding and output layer in int4 too, where nncf by default
    keeps them int8 per channel (group_size -1: int4 per channel)."""
    from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig
    from transformers import AutoTokenizer

    if bits == 16:
        _export_fp16(hf_dir, ov_dir)
    else:
        if bits == 4:
            quantization = OVWeightQuantizationConfig(
                bits=4, sym=sym, group_size=group_size, ratio=ratio, all_layers=all_layers
            )
        else:
            quantization = OVWeightQuantizationConfig(bits=8, sym=sym)
        ov_model = OVModelForCausalLM.from_pretrained(
            hf_dir, export=True, compile=False, quantization_config=quantization
        )
        ov_model.save_pretrained(ov_dir)
    AutoTokenizer.from_pretrained(hf_dir).save_pretrained(ov_dir)
    ensure_ov_tokenizers(ov_dir)


def _export_fp16(hf_dir: Path, ov_dir: Path) -> None:
    """Export with f16 weights and no compression: OVModelForCausalLM.save_pretrained always
    writes f32, so this is `optimum-cli export openvino --weight-format fp16`'s own call."""
    from optimum.exporters.openvino import main_export
    from optimum.intel import OVConfig

    main_export(str(hf_dir), ov_dir, task="text-generation-with-past",
                ov_config=OVConfig(dtype="fp16"))  # fmt: skip


def _corpus() -> list[str]:
    """Local, fixed training text: varied samples (prose, code, unicode, chat markup)."""
    samples = [
        "Beautiful is better than ugly. Explicit is better than implicit.",
        "Simple is better than complex. Complex is better than complicated.",
        "Readability counts. Errors should never pass silently, unless explicitly silenced.",
        "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n",
        "<start_of_turn>model\nThe capital of France is Paris.<end_of_turn>\n",
        "The quick brown fox jumps over the lazy dog.",
        "Hello! How are you today? I am a helpful assistant.",
        "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
        "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(i)",
        "Write a short poem about the sea, the wind and the stars.",
        "Explain how the chat format of Gemma works, turn by turn.",
        "Les élèves étudient à l'école. Größe, Straße, naïve café.",
        "日本語のテキスト、中文文本、한국어 텍스트.",
        "Emoji: 😀 🚀 ✨ 👍🏽 — and symbols: © ® ™ € £ ¥ → ← ∑ ∞.",
        'JSON: {"role": "user", "content": "Hi"} [1, 2, 3]',
        "user model system assistant question answer",
    ]
    return samples * 8


def _train_tokenizer(vocab_size: int):
    """A small Gemma-like BPE, its merges learned from `_corpus()`."""
    from tokenizers import Tokenizer, models, normalizers, trainers

    budget = vocab_size - len(_LEADING_TOKENS) - len(BYTE_TOKENS)
    trainer = trainers.BpeTrainer(vocab_size=budget, show_progress=False, special_tokens=[])
    # No whitespace pre-tokenizer, as in Gemma: with one, the converted OpenVINO tokenizer dropped
    # repeated spaces and the HF and OpenVINO ids diverged.
    draft = Tokenizer(models.BPE())
    draft.normalizer = normalizers.Replace(" ", "▁")
    draft.train_from_iterator(_corpus(), trainer=trainer)
    learned = [token for token, _ in sorted(draft.get_vocab().items(), key=lambda item: item[1])]
    return gemma_like_tokenizer(learned, _merges_of(draft), vocab_size)


BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]


def gemma_like_tokenizer(pieces: list[str], merges: list[tuple[str, str]], vocab_size: int):
    """A Gemma-like BPE tokenizer: Gemma-2's special tokens at their real ids, byte fallback,
    spaces as '▁', `<bos>` added by the post-processor, and Gemma-2's chat template.

    `pieces` follow the special and byte tokens in order; `<extraN>` fill up to `vocab_size`.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(_LEADING_TOKENS + BYTE_TOKENS)}
    for token in pieces:
        if token not in vocab and len(vocab) < vocab_size:
            vocab[token] = len(vocab)
    # Fill the rest of the model's vocabulary (no merge reaches these; they only decode).
    for i in range(vocab_size - len(vocab)):
        vocab[f"<extra{i}>"] = len(vocab)
    merges = [
        (left, right)
        for left, right in merges
        if left in vocab and right in vocab and left + right in vocab
    ]
    tokenizer = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>", fuse_unk=True)
    )
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in CONTROL_TOKEN_TEXTS]
    )
    # Gemma's tokenizer.json adds <bos> through its post-processor.
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", BOS_ID)]
    )
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
        padding_side="left",
    )
    hf_tokenizer.chat_template = GEMMA2_CHAT_TEMPLATE
    return hf_tokenizer


def _merges_of(tokenizer) -> list[tuple[str, str]]:
    import json

    model = json.loads(tokenizer.to_str())["model"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
