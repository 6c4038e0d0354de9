"""The command line: `python -m playground generate|render|compare|chat|convert|notebook run`.

Owns: argument parsing, reading conversation files, printing (streamed text or one JSON object),
and turning every expected error into exit status 2 with a one-line message on stderr.
Does not own: any of the logic it calls (engine, chat_format, inspection, settings).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from playground.chat_format import (
    DEFAULT_SYSTEM_POLICY,
    SYSTEM_POLICIES,
    ChatFormatError,
    RenderOptions,
    parse_conversation,
    render,
)
from playground.compare import conversation_inputs
from playground.conversion import DEFAULT_GROUP_SIZE, WEIGHTS
from playground.display import divergence_line, ended_at_once, model_label
from playground.engines import ENGINE_KINDS, open_engine, open_peer
from playground.errors import UserError
from playground.models import resolve_model
from playground.sampling import (
    MAX_ENGINE_STOP_STRINGS,
    MAX_STOP_LENGTH,
    MAX_STOP_STRINGS,
    RANGES,
    SAMPLING_FIELDS,
    describe_request,
)
from playground.session import Playground, exported_model, params_from_request
from playground.settings import load_settings
from playground.tokens import Tokenizer

EXPECTED_ERRORS = (UserError, OSError)  # every user-facing error, and unreadable files


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

    gen = commands.add_parser(
        "generate",
        help="generate from raw text or a conversation",
        description="Generate from raw text (--prompt, sent with no template) or a conversation "
        "(--messages, rendered with the model's chat template). Values left out take "
        "space.yaml's defaults.",
    )
    gen.add_argument(
        "--model",
        help="HF repo id, local folder, tiny-tutor, tiny-random or mid-random (default: "
        "space.yaml's model, or tiny-tutor when it can't be had)",
    )
    gen.add_argument("--engine", choices=ENGINE_KINDS, help="default: genai")
    gen.add_argument("--base-url", help="the remote engine's server, e.g. http://HOST:PORT/v1")
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="raw text, sent with no template")
    gen.add_argument(
        "--no-bos",
        action="store_true",
        help="with --prompt: send no <bos> at all (the engine trap; Gemma needs exactly one)",
    )
    source.add_argument(
        "--messages",
        type=Path,
        metavar="FILE",
        help="a JSON file holding a list of {role, content} (or {messages: [...]})",
    )
    _add_sampling(gen)
    gen.add_argument(
        "--stop",
        nargs="+",
        default=[],
        metavar="STR",
        help="Generation ends before the first of these texts: up to "
        f"{MAX_ENGINE_STOP_STRINGS} here (the web app's box takes {MAX_STOP_STRINGS}), each at "
        f"most {MAX_STOP_LENGTH} characters.",
    )
    gen.add_argument("--fold-separator", type=_escaped, help=FOLD_SEPARATOR_HELP)
    gen.add_argument("--json", action="store_true", help="print one JSON object at the end")

    ren = commands.add_parser("render", help="render a conversation with the chat template")
    ren.add_argument("conversation", type=Path, help="JSON list of messages or {messages: [...]}")
    ren.add_argument("--system-policy", choices=SYSTEM_POLICIES, default=DEFAULT_SYSTEM_POLICY)
    ren.add_argument("--no-generation-prompt", action="store_true")
    ren.add_argument("--prefill", default="")
    ren.add_argument("--fold-separator", type=_escaped, help=FOLD_SEPARATOR_HELP)
    ren.add_argument("--model", help="use this model's template and tokenizer")
    ren.add_argument("--json", action="store_true")
    ren.add_argument(
        "--all-renderers",
        action="store_true",
        help="run every chat-template renderer that runs here (transformers, OpenVINO GenAI, "
        "llama-cpp-python on the GGUF, llama.cpp's built-in formatter) and name how each "
        "differs from the playground's (default model: tiny-tutor, which ships its GGUF)",
    )
    ren.add_argument(
        "--gguf", type=Path, help="with --all-renderers: the GGUF (default: the model folder's)"
    )

    chat = commands.add_parser(
        "chat",
        help="a conversation in the terminal",
        description="A conversation in the terminal on the web app's playground: replies "
        "stream, Ctrl-C stops one, Ctrl-D or /quit leaves; /help lists the commands.",
    )
    chat.add_argument("--model", help="as for generate (default: space.yaml's, or tiny-tutor)")
    chat.add_argument("--engine", choices=ENGINE_KINDS, help="default: genai")
    chat.add_argument("--base-url", help="the remote engine's server, e.g. http://HOST:PORT/v1")
    chat.add_argument(
        "--preset", help=f"start from a preset of the web app's sidebar: {_presets_for_help()}"
    )

    _add_compare(commands)
    _add_convert(commands)
    _add_notebook(commands)
    return parser


def _add_sampling(command: argparse.ArgumentParser) -> None:
    ranges = _ranges_for_help()
    for f in SAMPLING_FIELDS:  # the one list of sampling parameters, with their help text
        flag = "--" + f.name.replace("_", "-")
        kind = int if RANGES[f.name].integer else float
        # What a request takes, which is more than the sliders' range (issue 33).
        command.add_argument(flag, type=kind, dest=f.name, help=describe_request(f.name, ranges))


def _add_compare(commands: argparse._SubParsersAction) -> None:
    from playground.compare import LAB, MAX_COLUMNS

    cmp = commands.add_parser(
        "compare",
        help="the fault lab: one conversation sent 2 to 4 ways, each run to its end",
        description="The Compare tab without a browser: each COLUMN is 'correct' or the name of "
        "a chat-format fault or an engine trap, run on the served engine, or on the remote "
        "server given by --base-url when written NAME@peer; every column prints its title, "
        "notes, token count against column 1's and its output, and a column on another engine "
        "than column 1's its divergence (greedy runs). Values left out take space.yaml's "
        "defaults.",
    )
    cmp.add_argument("conversation", type=Path, help="JSON list of messages or {messages: [...]}")
    cmp.add_argument(
        "columns", nargs="+", metavar="COLUMN",
        help=f"2 to {MAX_COLUMNS} of: correct, {', '.join(LAB)}; NAME@peer runs on the peer",
    )  # fmt: skip
    cmp.add_argument("--prefill", default="", help="the reply's start, as the Chat sends it")
    cmp.add_argument("--model", help="as for generate (default: space.yaml's, or tiny-tutor)")
    cmp.add_argument(
        "--base-url", help="the peer: a remote server on the same model, http://HOST:PORT/v1"
    )
    _add_sampling(cmp)
    cmp.add_argument("--json", action="store_true", help="print the columns as one JSON list")


def _add_convert(commands: argparse._SubParsersAction) -> None:
    conv = commands.add_parser(
        "convert",
        help="a Hugging Face checkpoint to an OpenVINO IR folder (int4, int8 or fp16)",
        description="Export a Hugging Face checkpoint (a Hub id or a local folder) to an "
        "OpenVINO IR folder the app serves with --model OUT, its tokenizers converted with "
        "openvino-tokenizers; OUT/convert.json records the settings and the command. Weight "
        "compression is NNCF's, through optimum-intel: OpenVINO's answer to bitsandbytes' "
        "load_in_4bit and load_in_8bit. Needs requirements-optimum.txt.",
    )
    conv.add_argument("source", help="a Hugging Face id (owner/name) or a checkpoint folder")
    conv.add_argument("out", type=Path, help="the IR folder to write (new or empty)")
    conv.add_argument("--weights", choices=WEIGHTS, default="int4",
                      help="int4 (smallest), int8 (per channel) or fp16 "
                      "(uncompressed) (default: %(default)s)")  # fmt: skip
    conv.add_argument("--group-size", type=int,
                      help=f"int4: weights per scale, -1 for one per channel "
                      f"(default: {DEFAULT_GROUP_SIZE})")  # fmt: skip
    symmetry = conv.add_mutually_exclusive_group()
    symmetry.add_argument("--sym", action="store_true", default=None,
                          help="symmetric weights, no zero points")  # fmt: skip
    symmetry.add_argument("--asym", action="store_false", dest="sym",
                          help="asymmetric weights, with zero points (the default)")  # fmt: skip
    conv.add_argument(
        "--ratio", type=float, help="int4: the share of layers in int4, the rest int8 (default: 1)"
    )
    conv.add_argument(
        "--all-layers",
        action="store_true",
        help="int4: the embedding and output layer in int4 too (by default int8)",
    )


def _add_notebook(commands: argparse._SubParsersAction) -> None:
    notebook = commands.add_parser("notebook", help="lessons: run them without a browser")
    notebook_commands = notebook.add_subparsers(
        dest="notebook_command", required=True, parser_class=_Parser
    )
    run = notebook_commands.add_parser(
        "run", help="run every prompt cell of a lesson in order and write the executed notebook"
    )
    run.add_argument("lesson", type=Path, help="a lesson (.md) or a notebook (.ipynb)")
    run.add_argument("--model", help="as for generate (default: space.yaml's, or tiny-tutor)")
    run.add_argument(
        "--out", type=Path, help="the executed Jupyter notebook (default: LESSON.ipynb, here)"
    )
    run.add_argument("--html", type=Path, help="also write the standalone HTML handout here")


def _ranges_for_help() -> dict:
    """space.yaml's ranges and defaults (what a run uses), or the built-in ones if it is bad
    (the run itself then says what is wrong)."""
    try:
        return dict(load_settings().ranges)
    except UserError:
        return dict(RANGES)


def _presets_for_help() -> str:
    """space.yaml's preset names, quoted, for --help."""
    try:
        return ", ".join(f"'{name}'" for name in load_settings().presets)
    except UserError:
        return "space.yaml's presets"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the record of a conversion
    try:
        commands = {
            "generate": _generate,
            "render": _render,
            "compare": _compare,
            "chat": _chat,
            "convert": _convert,
            "notebook": _notebook_run,
        }
        return commands[args.command](args)
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
    if args.no_bos and args.messages is not None:
        raise UserError("--no-bos goes with --prompt: a conversation is sent as the Chat sends it.")
    settings = load_settings(
        model=args.model,
        engine=args.engine,
        base_url=args.base_url,
        fold_separator=args.fold_separator,
    )
    # Anything the engine accepts, as the API does, refused before loading anything.
    values = {f.name: getattr(args, f.name) for f in SAMPLING_FIELDS}
    params, drawn_seed = params_from_request(settings, values, args.stop, settings.context_size)
    with _stdout_to_stderr():
        # Without --model, the default model falls back to tiny-tutor, as in the app.
        engine, notice = open_engine(settings)
    if notice:
        print(f"note: {notice}", file=sys.stderr)
    playground = Playground(engine, settings)
    if drawn_seed is not None and not args.json:
        print(f"random seed drawn: {drawn_seed}", file=sys.stderr)
    if args.messages is not None:
        replies = playground.reply(_read_conversation(args.messages), RenderOptions(), params)
    else:
        for note in playground.raw_notes(args.prompt, args.no_bos):  # the Raw tab's checks
            print(f"note: {note}", file=sys.stderr)
        delivery = playground.raw_delivery(args.prompt, args.no_bos)
        # The UI's rule: no empty prompt.
        replies = playground.complete(args.prompt, params, delivery=delivery)
    shown = ""
    for reply in replies:
        if not args.json:
            sys.stdout.write(reply.text[len(shown) :])
            sys.stdout.flush()
        shown = reply.text
    if args.json:
        out = {
            "text": reply.text,
            "token_ids": reply.result.token_ids,
            **reply.figures,
            "engine": engine.kind,
            "model": engine.info.model,
        }
        print(json.dumps(out, ensure_ascii=False))
    else:
        sys.stdout.write("\n")
        if why := ended_at_once(reply.text, reply.figures):  # else an empty line says nothing
            print(f"note: {why}", file=sys.stderr)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from playground.compare import PEER, compare, parse_variants

    variants = parse_variants(args.columns)  # refused before loading anything
    settings = load_settings(model=args.model, base_url=args.base_url)
    on_peer = any(v.engine == PEER for v in variants)
    if on_peer and not settings.remote.base_url:
        raise UserError("A column runs @peer: give the peer's address with --base-url URL.")
    values = {f.name: getattr(args, f.name) for f in SAMPLING_FIELDS}
    params, _ = params_from_request(settings, values, [], settings.context_size)
    conversation = json.dumps(_read_conversation(args.conversation))
    with _stdout_to_stderr():
        engine, notice = open_engine(settings)
        peer, peer_note = open_peer(settings, engine) if on_peer else (None, None)
    if notice:
        print(f"note: {notice}", file=sys.stderr)
    if peer_note:
        raise UserError(peer_note)
    playground = Playground(engine, settings)
    peers = Playground(peer, settings) if peer is not None else None
    messages, options = conversation_inputs(playground, conversation, args.prefill)
    columns = compare(playground, messages, options, variants, params, peers)
    if args.json:
        print(json.dumps(columns, ensure_ascii=False))
        return 0
    for column in columns:
        _print_column(column)
    return 0


def _print_column(column: dict) -> None:
    """One column of `compare` as lines of text: its title, counts, notes, prompt, output and,
    for a column on another engine than column 1's, its divergence."""
    print(f"== column {column['column']} ({column['engine']}): {column.get('title', '')}")
    if "error" in column:
        print(f"error: {column['error']}")
        return
    print(f"{column['token_count']} tokens, against column 1: +{column['tokens_added']} "
          f"/ -{column['tokens_removed']}")  # fmt: skip
    for note in column["notes"]:
        print(f"note: {note}")
    print(f"prompt: {column['prompt']!r}")
    print(f"output: {column['output']!r}")
    if found := column.get("divergence"):
        print(f"divergence: {divergence_line(found)}")
    print()


def _chat(args: argparse.Namespace) -> int:
    from playground.terminal import preset_values, run_chat

    settings = load_settings(model=args.model, engine=args.engine, base_url=args.base_url)
    values = preset_values(settings, args.preset)  # a bad name is refused before loading
    # The threads the engine starts as it loads (OpenVINO's, the engine's) must never take the
    # chat's Ctrl-C: CPython acts on it in the main thread only (see engines.base.start_daemon).
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        with _stdout_to_stderr():
            engine, notice = open_engine(settings)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return run_chat(Playground(engine, settings), values, notice)


def _convert(args: argparse.Namespace) -> int:
    from playground.conversion import WeightChoice, convert

    choice = WeightChoice(args.weights, args.group_size, args.sym, args.ratio, args.all_layers)
    command = shlex.join(["python", "-m", "playground", *args.argv])
    with _stdout_to_stderr():  # NNCF's tables and progress bars: stdout carries only OUT
        out = convert(args.source, args.out, choice, command)
    print(out)
    return 0


def _render(args: argparse.Namespace) -> int:
    from playground.inspection import inspect_messages

    messages = _read_conversation(args.conversation)
    settings = load_settings(model=args.model, fold_separator=args.fold_separator)
    options = RenderOptions(
        system_policy=args.system_policy,
        add_generation_prompt=not args.no_generation_prompt,
        prefill=args.prefill,
        fold_separator=settings.fold_separator,
    )
    if args.all_renderers:
        from playground.renderers import compare_renderers, report

        with _stdout_to_stderr():
            folder = resolve_model(args.model or "tiny-tutor", settings.cache_dir)
            found = compare_renderers(messages, options, folder, Tokenizer(folder), args.gguf)
        if args.json:
            print(json.dumps({"renderers": [r.as_json() for r in found]}, ensure_ascii=False))
        else:
            sys.stdout.write(report(found))
        return 0
    if args.gguf is not None:
        raise UserError("--gguf goes with --all-renderers")
    if not args.json and args.model is None:
        # Text only: the canonical template, no model needed.
        sys.stdout.write(render(messages, options).text)
        return 0
    with _stdout_to_stderr():
        folder = resolve_model(args.model or "tiny-random", settings.cache_dir)
        tokenizer = Tokenizer(folder)
    inspection = inspect_messages(messages, tokenizer, options, context_size=settings.context_size)
    if args.json:
        print(json.dumps(inspection.as_json(), ensure_ascii=False))
    else:
        sys.stdout.write(inspection.prompt)
    return 0


def _notebook_run(args: argparse.Namespace) -> int:
    """Run a lesson's cells in order, as `jupyter nbconvert --execute` would, and save them."""
    import nbformat

    from playground import notebook as nb

    cells = nb.load_cells(args.lesson.name, args.lesson.read_bytes())
    settings = load_settings(model=args.model)
    with _stdout_to_stderr():
        engine, notice = open_engine(settings)
    if notice:
        print(f"note: {notice}", file=sys.stderr)
    playground = Playground(engine, settings)
    outputs = {}
    for i, cell in enumerate(cells):
        if isinstance(cell, nb.PromptCell):
            params = nb.cell_params(cell, settings.ranges, settings.defaults())
            try:
                replies = playground.run_cell(cell, params)  # the Notebook tab's path
            except UserError as error:  # a refusal some lessons show on purpose
                outputs[i] = f"error: {error}"
                print(f"cell {i + 1}: {outputs[i]}", file=sys.stderr)
                continue
            *_, last = replies
            outputs[i], result = last.text, last.result
            print(f"cell {i + 1}: {result.new_tokens} new tokens, {result.stop_reason}",
                  file=sys.stderr)  # fmt: skip
    context = nb.NotebookContext(
        exported_model(engine.info.model, engine.folder)[0], settings.ranges, settings.defaults(),
        dict(settings.ov_config), end_ids=engine.tokenizer.eos_ids,
        prompt_of=playground.cell_prompt,
    )  # fmt: skip
    out = args.out or Path(args.lesson.stem + ".ipynb")
    nbformat.write(nb.to_ipynb(cells, outputs, context), out)
    print(out)
    if args.html:
        title = nb.lesson_title(cells)
        handout = nb.handout_html(
            title, cells, outputs, playground.cell_prompt,
            model=model_label(engine.info.model), settings=settings.defaults(),
        )  # fmt: skip
        args.html.write_text(handout)
        print(args.html)
    return 0
