"""The oracle "strong teacher" as a generation backend (``--backend oracle``).

Model spec: ``oracle:<style>:<world_dir>`` (``style`` in short, mid, long). The backend loads the
world's problems (all splits), its tokenizer and its slip rate; for each prompt it finds the world
problem whose text the prompt contains (exact substring; the longest wins) and writes that style's
trace (:mod:`micota.data.world.traces`). Completion ``k`` of a prompt uses trace seed ``params.seed``
for ``k == 0`` and ``f"{params.seed}.{k}"`` after, so long traces of different samples slip in
different places, and ``oracle:long:W`` with seed = the world seed and n = 1 writes exactly the
world's ``traces/long`` dataset. ``completion_tokens`` = world-tokenizer tokens of the text + 1 for
the end-of-turn token (as the ``hf`` backend counts EOS); a trace longer than ``max_new_tokens`` is
cut to that many tokens with ``finish_reason = "length"``. Sampling temperature is ignored: the
oracle is deterministic given the seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from micota.data.world.traces import STYLES, write_trace
from micota.errors import UserError
from micota.generation.backends import Completion, SamplingParams


def parse_spec(spec: str) -> tuple[str, Path]:
    """``oracle:<style>:<world_dir>`` (the ``oracle:`` prefix may be left out) -> (style, world_dir)."""
    s = str(spec)
    if s.startswith("oracle:"):
        s = s[len("oracle:"):]
    style, sep, world = s.partition(":")
    if not sep or style not in STYLES or not world:
        raise UserError(f"oracle model spec {spec!r}: expected oracle:<style>:<world_dir> with style in {', '.join(STYLES)}")
    return style, Path(world)


class OracleBackend:
    """Deterministic teacher traces for the miniature world's problems."""

    name = "oracle"

    def __init__(self, model: str, **_: Any):
        from micota.data.world.build import load_world

        self.model_id = str(model)
        self.style, world_dir = parse_spec(model)
        world = load_world(world_dir)
        self.tokenizer = world.tokenizer
        self.slip_rate = world.slip_rate
        self.by_text = {p.problem: p for split in world.problems.values() for p in split}
        self._by_len = sorted(self.by_text, key=len, reverse=True)

    def find(self, prompt: str) -> Any:
        """The world problem a prompt contains: an exact line first, else the longest substring."""
        for line in prompt.splitlines():
            p = self.by_text.get(line.strip())
            if p is not None:
                return p
        for text in self._by_len:
            if text in prompt:
                return self.by_text[text]
        raise UserError(f"oracle: prompt contains no problem of this world: {prompt[:80]!r}")

    def completion(self, text: str, max_new_tokens: int) -> Completion:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) + 1 <= max_new_tokens:
            return Completion(text=text, finish_reason="stop", completion_tokens=len(ids) + 1)
        cut = self.tokenizer.decode(ids[:max_new_tokens], skip_special_tokens=True)
        return Completion(text=cut, finish_reason="length", completion_tokens=max_new_tokens)

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        out = []
        for prompt in prompts:
            p = self.find(prompt)
            seeds = [params.seed if k == 0 else f"{params.seed}.{k}" for k in range(params.n)]
            out.append([self.completion(write_trace(self.style, p.meta, seed=s, slip_rate=self.slip_rate, problem_id=p.id),
                                        params.max_new_tokens) for s in seeds])
        return out
