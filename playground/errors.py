"""The one base class of errors a person can cause and fix.

Owns: `UserError`. Every module's own user-facing error (bad conversation, bad sampling value,
engine refusal, bad setting, unavailable model) derives from it, so the UI, the API and the
command line each catch one class: its message is shown as is, and no traceback is logged.
Does not own: the messages themselves (each module writes its own).
"""


class UserError(Exception):
    """An error in what a visitor or user asked for; str() is a one-line message for people."""
