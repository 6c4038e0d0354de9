"""The error the hub gives for the default model without network, as `models` raises it."""

from playground.models import ModelUnavailableError
from playground.settings import Settings

WANTED = Settings().model  # the default model, the one that falls back


def unavailable(cause: Exception) -> ModelUnavailableError:
    """A ModelUnavailableError raised from `cause`, as `models.download_snapshot` raises it."""
    try:
        raise ModelUnavailableError(f"Could not get the model {WANTED!r}") from cause
    except ModelUnavailableError as error:
        return error


def offline_error() -> ModelUnavailableError:
    from huggingface_hub.errors import LocalEntryNotFoundError

    return unavailable(LocalEntryNotFoundError("outgoing traffic has been disabled"))
