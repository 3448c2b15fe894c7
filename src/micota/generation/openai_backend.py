"""The ``openai`` backend: generation through OpenAI-compatible servers (``vllm serve``, SGLang,
``transformers serve``, llama.cpp's server, TGI) over their ``/v1/completions`` endpoint.

The prompt is rendered locally with MODEL's chat template (so ``template_hash`` stays true) and
sent as text, or as token ids when the server's own tokenization of the text would differ from
ours (``server_prompt="auto"``: e.g. a tokenizer that adds BOS in front of a template that
already wrote it; ``"text"``/``"tokens"`` force either). MODEL (a local folder or hub id)
supplies the tokenizer; the model name sent is ``served_model_name`` or MODEL.

One request per completion (``n = 1``): greedy prompts are asked once and repeated ``n`` times,
sampled completion ``k`` is asked with ``seed = sample_seed(seed, prompt, k)`` (see
:mod:`micota.generation.backends`), so a sample does not depend on which server answered or when.
At most ``concurrency`` requests are in flight; request ``j`` goes to server ``j mod S`` and each
retry to the next server, so S servers form one data-parallel generator and a dead one is routed
around. Connection errors, timeouts, 429 and 5xx are retried ``max_retries`` times with backoff
``min(2^attempt, 30)`` s; any other 4xx (wrong model name, context too long) stops the run with
one line quoting the server. ``finish_reason`` (``"length"`` stays, anything else is ``"stop"``) and
``completion_tokens`` (``usage``) come from the server's response. :meth:`generate_stream` yields
each prompt as soon as its completions are in, so the runner writes results as they arrive.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Iterator, Literal

from micota.errors import UserError
from micota.generation.backends import Completion, SamplingParams, prompt_token_ids, sample_seed

RETRY_STATUS = {408, 429, 500, 502, 503, 504}


def normalize_urls(urls: list[str] | str | None) -> list[str]:
    """Base URLs without a trailing slash, e.g. ``http://127.0.0.1:8000/v1``; one line on bad ones."""
    items = [urls] if isinstance(urls, str) else list(urls or [])
    out = [u.strip().rstrip("/") for item in items for u in str(item).split(",") if u.strip()]
    if not out:
        raise UserError("backend 'openai' needs --server-url BASE_URL (e.g. http://127.0.0.1:8000/v1), repeatable")
    for u in out:
        if not u.startswith(("http://", "https://")):
            raise UserError(f"--server-url {u!r}: expected an http:// or https:// base URL such as http://127.0.0.1:8000/v1")
    return out


class OpenAIBackend:
    """Completions from OpenAI-compatible servers; see the module docstring for the contract."""

    name = "openai"

    def __init__(self, model: str, *, server_url: list[str] | str | None = None, served_model_name: str | None = None,
                 concurrency: int = 8, request_timeout: float = 1800.0, max_retries: int = 5,
                 server_prompt: Literal["auto", "text", "tokens"] = "auto", allow_pickle: bool = False,
                 trust_remote_code: bool = False, tokenizer: Any = None, backoff: float = 1.0, **_: Any):
        from micota.models import load_tokenizer

        self.urls = normalize_urls(server_url)
        self.model_id = str(model)
        self.served = served_model_name or str(model)
        self.concurrency, self.max_retries, self.backoff = max(1, int(concurrency)), max(0, int(max_retries)), backoff
        if server_prompt not in ("auto", "text", "tokens"):
            raise UserError(f"server_prompt must be auto, text or tokens, got {server_prompt!r}")
        self.server_prompt = server_prompt
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(
            model, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        self._timeout = request_timeout
        self.client = self._new_client()
        self._count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.requests_per_server = {u: 0 for u in self.urls}

    def _new_client(self) -> Any:
        import httpx

        return httpx.Client(timeout=httpx.Timeout(self._timeout, connect=min(10.0, self._timeout)),
                            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency))

    # ---- one request ----

    def _payload(self, prompt: str) -> str | list[int]:
        if self.server_prompt == "text":
            return prompt
        ids = prompt_token_ids(self.tokenizer, prompt)
        if self.server_prompt == "tokens" or self.tokenizer(prompt)["input_ids"] != ids:
            return ids
        return prompt

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        with self._lock:
            first = self._count
            self._count += 1
        err = ""
        for attempt in range(self.max_retries + 1):
            if self._stop.is_set():
                raise UserError("generation stopped")
            url = self.urls[(first + attempt) % len(self.urls)]
            try:
                r = self.client.post(f"{url}/completions", json=body)
            except httpx.HTTPError as e:  # connection refused/reset, timeouts, protocol errors
                err = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            else:
                if r.status_code < 400:
                    with self._lock:
                        self.requests_per_server[url] += 1
                    try:
                        return r.json()
                    except ValueError:
                        err = f"HTTP {r.status_code} with a body that is not JSON"
                elif r.status_code in RETRY_STATUS:
                    err = f"HTTP {r.status_code}: {_detail(r)}"
                else:
                    raise UserError(f"server {url} refused the request for model {self.served!r} (HTTP {r.status_code}): "
                                    f"{_detail(r)}")
            if attempt < self.max_retries:
                self._stop.wait(min(self.backoff * 2 ** attempt, 30.0))
        raise UserError(f"no answer from {', '.join(self.urls)} after {self.max_retries + 1} tries ({err[:300]}); "
                        "rerun to resume once the server is up")

    def _complete(self, payload: str | list[int], prompt: str, k: int, params: SamplingParams) -> Completion:
        body: dict[str, Any] = {"model": self.served, "prompt": payload, "max_tokens": params.max_new_tokens,
                                "temperature": params.temperature, "n": 1}
        if params.temperature > 0:
            body.update(top_p=params.top_p, seed=sample_seed(params.seed, prompt, k))
        data = self._post(body)
        try:
            choice = data["choices"][0]
            text = choice["text"]
        except (KeyError, IndexError, TypeError):
            raise UserError(f"server answered without choices[0].text for model {self.served!r}: {str(data)[:200]}") from None
        reason = "length" if choice.get("finish_reason") == "length" else "stop"
        usage = data.get("usage") or {}
        n_tok = usage.get("completion_tokens")
        if n_tok is None:  # a server without usage: count the text's tokens (+ the EOS that stopped it)
            n_tok = len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + (reason == "stop")
        return Completion(text=text, finish_reason=reason, completion_tokens=int(n_tok))

    # ---- the backend interface ----

    def generate_stream(self, prompts: list[str], params: SamplingParams) -> Iterator[tuple[int, list[Completion]]]:
        """Yield ``(prompt index, its n completions)`` in completion order."""
        reps = params.n if params.temperature > 0 else 1
        results: list[list[Completion | None]] = [[None] * reps for _ in prompts]
        left = [reps] * len(prompts)
        self._stop.clear()
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="micota-openai")
        futs: dict[Future, tuple[int, int]] = {}
        try:
            for i, p in enumerate(prompts):
                payload = self._payload(p)
                for k in range(reps):
                    futs[pool.submit(self._complete, payload, p, k, params)] = (i, k)
            pending = set(futs)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    i, k = futs[f]
                    results[i][k] = f.result()
                    left[i] -= 1
                    if left[i] == 0:
                        comps = [c for c in results[i] if c is not None]
                        yield i, comps if reps == params.n else comps * params.n
        finally:
            self._stop.set()  # requests not yet sent are dropped; a rerun resumes them
            pool.shutdown(wait=False, cancel_futures=True)
            if any(not f.done() for f in futs):  # stopped early: cut the requests in flight, so exit is prompt
                old, self.client = self.client, self._new_client()
                try:
                    old.close()
                except Exception:  # noqa: BLE001 - closing under in-flight requests is best effort
                    pass

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        out: list[list[Completion]] = [[] for _ in prompts]
        for i, comps in self.generate_stream(prompts, params):
            out[i] = comps
        return out

    def close(self) -> None:
        self._stop.set()
        self.client.close()


def _detail(r: Any) -> str:
    try:
        data = r.json()
    except ValueError:
        return (r.text or "").strip()[:300]
    if isinstance(data, dict):
        d = data.get("detail") or data.get("error") or data.get("message") or data
        if isinstance(d, dict):
            d = d.get("message") or d
        return str(d)[:300]
    return str(data)[:300]


def wait_ready(url: str, *, timeout: float = 120.0) -> None:
    """Block until ``GET {url}/models`` answers 200 (a server finished loading), else UserError."""
    import httpx

    deadline = time.monotonic() + timeout
    err = ""
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url.rstrip('/')}/models", timeout=5.0).status_code == 200:
                return
        except httpx.HTTPError as e:
            err = type(e).__name__
        time.sleep(0.5)
    raise UserError(f"server {url} not ready after {timeout:.0f}s ({err or 'no 200 from /models'})")
