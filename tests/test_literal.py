"""`display.literal`: a visitor's text for the Chatbot, as typed and making no element, and
`display.from_literal`, which gives the text back (issue 33). The browser's side, the edit box,
is in test_browser_typed_text.py."""

import re

import pytest

from playground.display import chat_display, from_literal, literal

TEXTS = [
    "edited <img src=x onerror=alert(1)> <b id=bold>x</b> ![a](http://127.0.0.1:9/x.png)",
    "  **bold**  $$x^2$$ `code` www.example.com a@b.co\n\n\n1. one\n    indented\t|a|b|\n---",
    "typed entities stay typed: &lt; &amp;amp; &#65; &#x41; &#99999999;",
    "C1 controls \x85 \x80, a BOM \ufeff, emoji 😀, Ünïcode, العربية, 中文 — “quotes” …",
    "",
    " ",
    "a\r\nb\rc",
]
STARTS = ["# h", "- l", "+ l", "= x", "1. o", "12) o", "> q", "***", "| a |", "```", "$$x$$"]


@pytest.mark.parametrize("text", TEXTS + STARTS)
def test_literal_gives_the_text_back(text):
    assert from_literal(literal(text)) == text


@pytest.mark.parametrize("text", TEXTS + STARTS)
def test_literal_leaves_no_markup_and_no_whitespace_but_lone_spaces(text):
    shown = literal(text)
    outside = re.sub(r"&#\d+;", "\x00", shown)  # a reference is none of the text's characters
    # U+0085 stays as it is: a reference to it would show "…" (`display._C1`).
    assert not set(outside) & set("\\`*_{}[]<>&|~$^@")
    assert not re.search(r"[^\S \x85]|  |^ | $|^[#+=-]|^\d+[.)]|:/|www\.", outside, re.I)


def test_prose_stays_as_it_is_for_the_copy_button():
    prose = 'Hello. Is it 3:30 (or 4)? I\'m fine, thanks - bye! 100% #1 "quoted" = ok/no; é—ü 😀'
    assert literal(prose) == prose


def test_only_numeric_references_are_undone():
    assert from_literal("&#60;b&#62; &lt; &#x41; &#99999999;") == "<b> &lt; &#x41; &#99999999;"


def test_the_visitors_message_is_literal_and_a_reply_keeps_its_markdown():
    turns = [
        {"role": "user", "content": "**hi** <b>"},
        {"role": "assistant", "content": "**hi** <b> ![i](http://x/i.png)"},
    ]
    user, reply = chat_display(turns)
    assert user["content"] == "&#42;&#42;hi&#42;&#42; &#60;b&#62;"
    assert reply["content"] == "**hi** &lt;b&gt; &#33;[i](http://x/i.png)"
