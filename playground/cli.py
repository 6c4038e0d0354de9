"""The command line: `python -m playground generate|render`.

Owns: argument parsing, reading conversation files, printing (streamed text or one JSON object),
and turning every expected error into exit status 2 with a one-line message on stderr.
Does not own: any of the logic it calls (engine, chat_format, inspection, settings).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from playground.chat_format import SYSTEM_POLICIES, ChatFormatError, parse_conversation, render
from playground.engine import ENGINE_KINDS, EngineError, open_engine
from playground.models import ModelUnavailableError, resolve_model
from playground.sampling import ParamError, SamplingParams
from playground.settings import SettingsError, load_settings
from playground.tokens import Tokenizer

EXPECTED_ERRORS = (
    ChatFormatError,
    EngineError,
    ModelUnavailableError,
    ParamError,
    SettingsError,
    OSError,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: also one line, status 2
        raise SystemExit(_fail(message))


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _escaped(text: str) -> str:
    """A flag's text with \\n, \\t and \\\\ read as escapes: a newline is hard to type."""
    escapes = {"n": "\n", "t": "\t", "\\": "\\"}
    out, chars = [], iter(text)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            out.append(escapes.get(following, "\\" + following))
        else:
            out.append(char)
    return "".join(out)


FOLD_SEPARATOR_HELP = (
    "text joining a folded system message to the first user message; reads \\n and \\t "
    "(default: space.yaml's fold_separator, a blank line)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m playground", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = commands.add_parser("generate", help="generate from raw text or a conversation")
    gen.add_argument("--model", help="HF repo id, local folder, tiny-random or mid-random")
    gen.add_argument("--engine", choices=ENGINE_KINDS)
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="raw text, sent with no template")
    source.add_argument("--messages", type=Path, help="JSON list of {role, content}")
    gen.add_argument("--max-new-tokens", type=int)
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--repetition-penalty", type=float)
    gen.add_argument("--seed", type=int, help="-1: a random seed, reported")
    gen.add_argument("--stop", nargs="+", default=[], metavar="STR")
    gen.add_argument("--fold-separator", type=_escaped, help=FOLD_SEPARATOR_HELP)
    gen.add_argument("--json", action="store_true", help="print one JSON object at the end")

    ren = commands.add_parser("render", help="render a conversation with the chat template")
    ren.add_argument("conversation", type=Path, help="JSON list of messages or {messages: [...]}")
    ren.add_argument("--system-policy", choices=SYSTEM_POLICIES, default="fold")
    ren.add_argument("--no-generation-prompt", action="store_true")
    ren.add_argument("--prefill", default="")
    ren.add_argument("--fold-separator", type=_escaped, help=FOLD_SEPARATOR_HELP)
    ren.add_argument("--model", help="use this model's template and tokenizer")
    ren.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _generate(args) if args.command == "generate" else _render(args)
    except EXPECTED_ERRORS as error:
        return _fail(str(error).replace("\n", " "))


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what is written to stdout meanwhile to stderr, at the file-descriptor level.

    Building or converting a model logs to stdout (NNCF's tables, progress bars) from loggers
    and native code that hold their own reference to it; stdout must carry only the output.
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1: nothing to protect
        saved = None
    if saved is None:
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _read_conversation(path: Path) -> list[dict[str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ChatFormatError(f"{path} is not UTF-8 text: {error.reason}") from None
    return parse_conversation(text)


def _generate(args: argparse.Namespace) -> int:
    settings = load_settings(
        model=args.model, engine=args.engine, fold_separator=args.fold_separator
    )
    # Anything the engine accepts, as the API does; the sliders' ranges give only the defaults.
    params, drawn_seed = SamplingParams.from_request(
        dict(settings.ranges),
        settings.context_size,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        stop=args.stop,
    )
    with _stdout_to_stderr():
        engine, _ = open_engine(settings.with_(model_given=True))  # given models never fall back
    if args.messages is not None:
        messages = _read_conversation(args.messages)
        prompt = render(
            messages,
            template=engine.tokenizer.chat_template,
            fold_separator=settings.fold_separator,
        ).text
    else:
        prompt = args.prompt
    if drawn_seed is not None and not args.json:
        print(f"random seed drawn: {drawn_seed}", file=sys.stderr)
    generation = engine.generate(prompt, params)
    for chunk in generation:
        if not args.json:
            sys.stdout.write(chunk)
            sys.stdout.flush()
    result = generation.result
    if args.json:
        out = {
            "text": result.text,
            "token_ids": result.token_ids,
            "stop_reason": result.stop_reason,
            "prompt_tokens": result.prompt_tokens,
            "new_tokens": result.new_tokens,
            "ttft_s": result.ttft_s,
            "tokens_per_s": result.tokens_per_s,
            "seed": params.seed,
            "engine": engine.kind,
            "model": engine.info.model,
        }
        print(json.dumps(out, ensure_ascii=False))
    else:
        sys.stdout.write("\n")
    return 0


def _render(args: argparse.Namespace) -> int:
    from playground.inspection import inspect_messages

    messages = _read_conversation(args.conversation)
    settings = load_settings(model=args.model, fold_separator=args.fold_separator)
    options = dict(
        system_policy=args.system_policy,
        add_generation_prompt=not args.no_generation_prompt,
        prefill=args.prefill,
        fold_separator=settings.fold_separator,
    )
    if not args.json and args.model is None:
        # Text only: the canonical template, no model needed.
        sys.stdout.write(render(messages, **options).text)
        return 0
    with _stdout_to_stderr():
        folder = resolve_model(args.model or "tiny-random", settings.cache_dir)
        tokenizer = Tokenizer(folder)
    inspection = inspect_messages(
        messages, tokenizer, context_size=settings.context_size, **options
    )
    if args.json:
        print(json.dumps(inspection.as_json(), ensure_ascii=False))
    else:
        sys.stdout.write(inspection.prompt)
    return 0
