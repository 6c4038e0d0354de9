"""Share links: a whole view of the playground carried in a URL, and checking one that comes back.

Owns: the link's format (`?share=` and the base64url of zlib-compressed JSON, version 1), its size
bounds, `encode_view` and `decode_view` (every field checked as typed input is: its type, its
length, a tab's own names, sampling values against space.yaml's ranges), and the short output
hash a replay is checked against (`output_hash`).
Does not own: which components hold the values (`ui.share`), what the values mean (`session`,
`compare`). Imports no gradio.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import zlib
from collections.abc import Mapping
from typing import Any

from playground.chat_format import DEFAULT_SYSTEM_POLICY, SYSTEM_POLICIES, parse_conversation
from playground.compare import ENGINES, MAX_COLUMNS, SERVED, VARIANT_TITLES, parse_changes
from playground.engines import ENGINE_KINDS
from playground.errors import UserError
from playground.sampling import SAMPLING_NAMES
from playground.session import Playground

VERSION = 1
SHARE_TABS = ("chat", "raw", "inspector", "compare")
# A URL of ~16 KB passes browsers, Hugging Face's proxy and Gradio; the view inside is bounded
# again once inflated, so a small link cannot unpack into a large one (a zip bomb).
MAX_LINK_CHARS = 12_000
MAX_VIEW_BYTES = 200_000
HASH_CHARS = 12
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_HASH = re.compile(rf"[0-9a-f]{{{HASH_CHARS}}}")
# A model's name as a link carries it (a Hub id, or tiny-tutor): one short line. It is shown in
# the page's note, so a link must not put 65,000 characters there (issue 34).
_MODEL = re.compile(r"[^\s]{1,200}")
# Each tab's fields and their JSON types; every view also has the COMMON ones.
COMMON = {"v": int, "tab": str, "model": str, "engine": str, "sampling": dict, "stop": str,
          "hash": str}  # fmt: skip
FIELDS = {
    "chat": {"messages": list, "system": str, "system_policy": str, "prefill": str},
    "raw": {"prompt": str, "no_bos": bool},
    "inspector": {
        "conversation": str,
        "generation_prompt": bool,
        "system_policy": str,
        "prefill": str,
    },
    "compare": {"conversation": str, "prefill": str, "count": int, "columns": list},
}


class ShareError(UserError):
    """A link that cannot be opened or made; str() says why, in one line."""


def output_hash(text: str) -> str:
    """The short hash of an output that a link carries, to tell whether a replay matched."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_CHARS]


def encode_view(view: Mapping[str, Any]) -> str:
    """The `share` value of a link for `view` (a dict of FIELDS' names)."""
    data = json.dumps({"v": VERSION, **view}, ensure_ascii=False, separators=(",", ":"))
    token = base64.urlsafe_b64encode(zlib.compress(data.encode("utf-8"), 9)).decode("ascii")
    token = token.rstrip("=")
    if len(token) > MAX_LINK_CHARS:
        raise ShareError(
            f"This view is too large for a link ({len(token)} characters; the limit is "
            f"{MAX_LINK_CHARS}): shorten the conversation or the prompt."
        )
    return token


def decode_view(token: Any, playground: Playground) -> dict[str, Any]:
    """The view a link's `share` value holds, every field checked; ShareError says why not."""
    data = _inflate(token)
    try:
        view = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # nested past the stack
        raise ShareError("This share link is damaged: its contents are not readable.") from None
    if not isinstance(view, dict) or view.get("v") != VERSION:
        raise ShareError("This share link was made by another version of the playground.")
    tab = view.get("tab")
    if tab not in SHARE_TABS:
        raise ShareError("This share link names no tab of the playground.")
    fields = COMMON | FIELDS[tab]
    for name, value in view.items():
        if name not in fields:
            raise ShareError(f"This share link has a field the {tab} view does not: {name!r}.")
        if type(value) is not fields[name]:  # bool is not an int here, nor an int a bool
            raise ShareError(f"This share link's {name!r} has the wrong type.")
    try:
        return _checked(view, playground)
    except ShareError:
        raise
    except UserError as error:
        raise ShareError(f"This share link cannot be opened: {error}") from None


def _inflate(token: Any) -> bytes:
    if not isinstance(token, str) or not token:
        raise ShareError("This share link is empty.")
    if len(token) > MAX_LINK_CHARS:
        raise ShareError(
            f"This share link is too long ({len(token)} characters; the limit is {MAX_LINK_CHARS})."
        )
    if not _TOKEN.fullmatch(token):
        raise ShareError("This share link is damaged: it has characters a link never has.")
    try:
        packed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        inflater = zlib.decompressobj()
        data = inflater.decompress(packed, MAX_VIEW_BYTES)
    except (binascii.Error, ValueError, zlib.error):
        raise ShareError("This share link is damaged: it cannot be unpacked.") from None
    if inflater.unconsumed_tail:
        raise ShareError("This share link unpacks to more than a view can hold.")
    return data


def _checked(view: dict[str, Any], playground: Playground) -> dict[str, Any]:
    """The view with every text checked like typed input and its values within range."""
    for name, value in view.items():
        if isinstance(value, str):
            playground.check_text(value, f"The link's {name}")
    unknown = set(view.get("sampling", {})) - set(SAMPLING_NAMES)
    if unknown:
        raise ShareError(f"This share link has unknown sampling values: {sorted(unknown)}.")
    params = playground.params(view.get("sampling", {}), view.get("stop", ""))
    view["sampling"] = params.values()
    if "hash" in view and not _HASH.fullmatch(view["hash"]):
        raise ShareError("This share link's output hash is damaged.")
    if "model" in view and not _MODEL.fullmatch(view["model"]):
        raise ShareError("This share link's model name is damaged.")
    if "engine" in view and view["engine"] not in ENGINE_KINDS:
        raise ShareError("This share link names an unknown engine.")
    if view.get("system_policy", DEFAULT_SYSTEM_POLICY) not in SYSTEM_POLICIES:
        raise ShareError("This share link names an unknown system policy.")
    if view["tab"] == "chat":
        view["messages"] = _chat_messages(view["messages"], playground)
    if view["tab"] == "compare":
        _check_columns(view, playground)
    return view


def _chat_messages(messages: list, playground: Playground) -> list[dict[str, str]]:
    checked = parse_conversation(messages)
    for message in checked:
        if message["role"] not in ("user", "assistant"):
            raise ShareError("A shared chat holds user and assistant messages only.")
        playground.check_text(message["content"], "A shared message")
    return checked


def _check_columns(view: dict[str, Any], playground: Playground) -> None:
    columns = view["columns"]
    if not 2 <= view["count"] <= MAX_COLUMNS or not 0 < len(columns) <= MAX_COLUMNS:
        raise ShareError(f"A shared comparison has 2 to {MAX_COLUMNS} columns.")
    for column in columns:
        if not isinstance(column, dict) or set(column) - {"prompt", "text", "changes", "engine"}:
            raise ShareError("A shared column has fields it should not.")
        if not all(isinstance(v, str) for v in column.values()):
            raise ShareError("A shared column's fields must be text.")
        if column.get("prompt", "correct") not in VARIANT_TITLES:
            raise ShareError("A shared column names an unknown variant.")
        if column.get("engine", SERVED) not in ENGINES:
            raise ShareError(f"A shared column's engine is one of {', '.join(ENGINES)}.")
        parse_changes(column.get("changes", ""))
        playground.check_text(column.get("text", ""), "A shared column's prompt")
