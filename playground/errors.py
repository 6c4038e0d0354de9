"""The one base class of errors a person can cause and fix.

Owns: `UserError`. Every module's own user-facing error (bad conversation, bad sampling value,
engine refusal, bad setting, unavailable model) derives from it, so the UI, the API and the
command line each catch one class: its message is shown as is, and no traceback is logged. Also
`reason_of`, a library's exception as the one line a person needs.
Does not own: the messages themselves (each module writes its own).
"""

import re

# OpenVINO GenAI's template errors open with the C++ file and line, then advice, then "Minja's
# error: <the template's own message> at row …" and the template printed once per frame.
_MINJA = re.compile(r"Minja's error: (.*?)(?: at row \d|$)", re.S)


class UserError(Exception):
    """An error in what a visitor or user asked for; str() is a one-line message for people."""


def reason_of(error: BaseException, limit: int = 300) -> str:
    """A library's exception as one line: the template's own message for GenAI's, else the
    text with its whitespace folded, cut at `limit` characters."""
    text = str(error)
    if found := _MINJA.search(text):
        text = found.group(1)
    text = " ".join(text.split())
    return (text[: limit - 3] + "...") if len(text) > limit else text or type(error).__name__
