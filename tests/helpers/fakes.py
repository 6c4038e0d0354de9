"""A recording fake of the native model, for fast UI-logic tests (never the only proof).

`RecordingEngine` is a real `Engine` (lock, streaming, stop strings, cancellation, figures) whose
native loop is replaced: it records every call and emits a fixed reply's token ids.
"""

from pathlib import Path

from playground.engines import Engine, EngineInfo
from playground.tokens import Tokenizer


class RecordingEngine(Engine):
    kind = "recording"

    def __init__(self, folder: Path, reply: str = "Fine, thanks.", context_size: int = 8192):
        tokenizer = Tokenizer(folder)
        info = EngineInfo("recording-fake", self.kind, "CPU", "none", 0.0, False)
        super().__init__(folder, tokenizer=tokenizer, context_size=context_size, info=info)
        self.reply_ids = [*tokenizer.encode(reply)[1:], tokenizer.end_of_turn_id]
        self.calls: list[dict] = []

    def run_native(self, prompt, params, on_token):
        ids = prompt.ids
        self.calls.append({"prompt": self.tokenizer.decode(ids), "ids": ids, "params": params})
        for token_id in self.reply_ids[: params.max_new_tokens]:
            if on_token(token_id):
                return
