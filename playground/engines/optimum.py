"""The `optimum` engine: optimum-intel's OVModelForCausalLM with transformers' generate.

Owns: the path of the LocalAI definition (`type: OVModelForCausalLM`), kept as the one-at-a-time
reference, and its scores (the reshaped distribution, with the top alternatives).
Does not own: the stream, slots and stop rules (`engines.base`), loading and caching (the
registry in `engines/__init__`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playground.engines.base import (
    TOP_ALTERNATIVES,
    Engine,
    EngineError,
    NativeFigures,
    OnToken,
    Prompt,
    TokenScore,
)
from playground.sampling import SamplingParams, transformers_options


class OptimumEngine(Engine):
    """The reference path: one generation at a time (the base's one slot)."""

    kind = "optimum"
    probability_note = (
        "the probabilities transformers sampled from: after the repetition penalty and, when "
        "sampling, after temperature, top-k and top-p. With the 5 likeliest tokens."
    )

    def __init__(self, folder: Path, device: str, ov_config: dict[str, str], **kwargs: Any) -> None:
        try:
            from optimum.intel import OVModelForCausalLM
        except ImportError as error:
            raise EngineError(
                "The optimum engine needs torch and optimum-intel, which the app's own "
                "requirements leave out: pip install -r requirements-optimum.txt "
                f"(missing: {error.name})."
            ) from None
        self.model = OVModelForCausalLM.from_pretrained(
            folder, device=device, ov_config=dict(ov_config), compile=True
        )
        super().__init__(folder, **kwargs)

    @classmethod
    def create(cls, folder: Path, spec: Any, tokenizer: Any, ov_config: dict) -> OptimumEngine:
        # One generation at a time: the base's one slot, whatever max_concurrent says.
        return cls(folder, spec.device, ov_config, tokenizer=tokenizer,
                   context_size=spec.context_size)  # fmt: skip

    def run_native(
        self,
        prompt: Prompt,
        params: SamplingParams,
        on_token: OnToken,
    ) -> NativeFigures | None:
        import torch
        from transformers import (
            LogitsProcessor,
            LogitsProcessorList,
            StoppingCriteria,
            StoppingCriteriaList,
        )
        from transformers.generation.streamers import BaseStreamer

        stopped = False
        step_logprobs: list[torch.Tensor] = []

        class Scores(LogitsProcessor):
            """Keeps the newest step's log-probabilities (one vector: a 256k vocabulary at
            every step would be about 1 MB a token), read when the streamer sees the choice.
            transformers runs it after its own processors, so under sampling it sees the
            scores after temperature, top-k and top-p."""

            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                step_logprobs[:] = [torch.log_softmax(scores[0].float(), dim=-1)]
                return scores

        class Streamer(BaseStreamer):
            prompt_seen = False

            def put(self, value: torch.Tensor) -> None:
                nonlocal stopped
                if not self.prompt_seen:  # generate() first passes the prompt ids
                    self.prompt_seen = True
                    return
                for token_id in value.reshape(-1).tolist():
                    stopped = stopped or on_token(token_id, _score(step_logprobs, token_id))

            def end(self) -> None:
                pass

        class Stop(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: object, **kwargs) -> torch.Tensor:
                return torch.full((input_ids.shape[0],), stopped, dtype=torch.bool)

        if not params.greedy:
            torch.manual_seed(params.seed)  # global RNG, safe: one generation at a time
        input_ids = torch.tensor([prompt.ids], dtype=torch.long)
        self.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=params.max_new_tokens,
            repetition_penalty=params.repetition_penalty,
            eos_token_id=sorted(prompt.end_ids),
            pad_token_id=0,
            streamer=Streamer(),
            stopping_criteria=StoppingCriteriaList([Stop()]),
            logits_processor=LogitsProcessorList([Scores()]),
            **transformers_options(params, self.tokenizer.vocab_size),
        )
        return None


def _score(step_logprobs: list, token_id: int) -> TokenScore | None:
    """The chosen token's score and the step's top alternatives, from the kept vector."""
    if not step_logprobs:
        return None
    logprobs = step_logprobs[0]
    top = logprobs.topk(TOP_ALTERNATIVES)
    alternatives = tuple(
        (int(i), float(v)) for i, v in zip(top.indices.tolist(), top.values.tolist(), strict=True)
    )
    return TokenScore(float(logprobs[token_id]), alternatives)


ENGINE = OptimumEngine
