"""tiny-tutor: a ~1M-parameter Gemma-2 trained here on Gemma-2's chat format.

Owns the recipe of the built-in model `tiny-tutor`: its synthetic chat corpus (`corpus`), its
character-level tokenizer (`vocab`), training with torch (`train`), the OpenVINO export and the
f16 GGUF beside it for llama.cpp's servers (`export`), and the held-out evaluation through the
app's own engine (`evaluate`). The command line is `python -m playground.tutor
train|export|eval`.

Does not own: serving (the trained IR folder is resolved like any model by `models`) or chat
templates (`chat_format` renders every training conversation, so the model learns exactly the
prompts the app sends). torch, optimum and nncf are imported only by training and export.
"""

from pathlib import Path

# Bumped whenever the corpus, tokenizer, model shape or training schedule changes; the shipped
# model records the recipe it was built from, and a test holds the two together.
RECIPE = 4
# The Compare tab's faults and engine traps (`compare.LAB` names) that leave this recipe's
# replies as they are, byte for byte: measured greedy on the Compare tab's conversations (a test
# holds the model to it, `tests/test_compare.py`). The page says so beside them instead of
# promising a change (issue 33).
UNCHANGED_BY = frozenset({"second-bos", "system-as-is", "other-separator", "no-bos"})

TUTOR_DIR = Path(__file__).resolve().parent / "tiny-tutor"
# The same model for llama.cpp (its server is the remote engine's test peer): the IR's weights,
# dequantized, at f16 (llama.cpp's Q4 kernels crash on CPUs with AMX; f16 runs everywhere).
GGUF = TUTOR_DIR / "tiny-tutor-f16.gguf"
