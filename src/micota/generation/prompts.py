"""The one prompt-rendering path, used by generate, eval, train and bpc.

A problem becomes chat messages (:func:`build_messages`): the user turn is the problem, a newline,
and the instruction. :func:`render_prompt` turns messages into the exact string the model is
conditioned on — the tokenizer's chat template with the generation prompt, an explicit
``template`` override, or plain text for base models (``use_chat_template=False``).
:func:`template_hash` fingerprints everything that shapes that string, so records produced under
different templates never mix silently.

Chat templates come from model folders and ``--template`` files, so they are untrusted: they render
in transformers' sandboxed Jinja environment, a template the sandbox blocks is one ``error:`` line,
and rendering is bounded to :data:`RENDER_SECONDS` (a nested-loop template cannot hang a run).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator, Sequence

from micota.errors import UserError
from micota.io import dumps_canonical, sha256_text

DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def build_messages(problem: str, *, instruction: str = DEFAULT_INSTRUCTION, system: str | None = None) -> list[dict[str, str]]:
    user = f"{problem.strip()}\n{instruction}" if instruction else problem.strip()
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": user}]


def _as_dicts(messages: Sequence[Any]) -> list[dict[str, str]]:
    return [m.model_dump() if hasattr(m, "model_dump") else dict(m) for m in messages]


def render_prompt(
    tokenizer: Any,
    messages: Sequence[Any],
    *,
    use_chat_template: bool = True,
    template: str | None = None,
) -> str:
    """Messages -> the prompt string (ends where the assistant's completion starts)."""
    msgs = _as_dicts(messages)
    if not use_chat_template:
        return "\n\n".join(m["content"] for m in msgs) + "\n"
    tpl = template or getattr(tokenizer, "chat_template", None)
    if not tpl:
        raise UserError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template: pass --template FILE.jinja or --no-chat-template"
        )
    from jinja2 import TemplateError

    try:
        with _time_limit(RENDER_SECONDS):
            return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, chat_template=tpl)
    except TemplateError as e:  # includes the sandbox's SecurityError
        raise UserError(f"chat template refused or broken ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    except _RenderTimeout:
        raise UserError(f"chat template took longer than {RENDER_SECONDS:g}s to render one prompt (a runaway loop?)") from None


RENDER_SECONDS = 10.0


class _RenderTimeout(BaseException):  # BaseException: Jinja's own ``except Exception`` cannot swallow it
    pass


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`_RenderTimeout` after ``seconds`` (SIGALRM; main thread only, else unbounded)."""
    if threading.current_thread() is not threading.main_thread() or signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise _RenderTimeout()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def render_conversation(tokenizer: Any, prompt: Sequence[Any], completion_text: str, *, use_chat_template: bool = True,
                        template: str | None = None) -> tuple[str, str]:
    """(prompt string, completion string) for training/scoring: the completion is the assistant's
    text followed by the end-of-turn token, so the model learns to stop."""
    p = render_prompt(tokenizer, prompt, use_chat_template=use_chat_template, template=template)
    eos = tokenizer.eos_token or ""
    return p, completion_text + eos


def template_hash(tokenizer: Any, *, use_chat_template: bool = True, template: str | None = None,
                  instruction: str = DEFAULT_INSTRUCTION, system: str | None = None) -> str:
    tpl = (template or getattr(tokenizer, "chat_template", None) or "") if use_chat_template else "<plain>"
    return sha256_text(dumps_canonical({"template": tpl, "instruction": instruction, "system": system,
                                        "eos": getattr(tokenizer, "eos_token", None)}))[:16]
