"""The resumable sample writer behind ``micota generate`` and ``micota eval``.

:func:`generate` renders each problem with :mod:`micota.generation.prompts`, asks a backend for
``n`` completions per prompt, and appends :class:`micota.records.Sample` rows to
``OUT/samples-NNNNN.jsonl`` (one new shard per run or resume) with a flush+fsync per batch: a
batch is ``batch_size`` prompts given to ``backend.generate``, or, for a backend that streams
(``generate_stream``, the server backend), the next ``batch_size`` prompts whose completions have
arrived, so a server's queue never drains between batches. ``manifest.json`` is written last.
Key = ``(problem_id, sample_idx)``. A backend built here is closed (engine shut down) when the
stage ends.

Split (``--tasks N``, e.g. one Slurm array task each): problem ``i`` belongs to task ``i mod N``;
each task writes its own generate output ``OUT/tasks/task-K-of-N/`` and ``OUT/manifest.json`` is
written last, once every task is complete (:mod:`micota.generation.split`). Readers
(:func:`load_samples`) read the union of ``OUT``'s shards and its tasks' shards.

Resume: rows already in the shards are kept (a torn last line, left by a killed writer, is dropped
and repaired) and only missing keys are generated, so a SIGKILL loses at most the batch in flight
and no key is ever written twice. Samples record ``config_hash`` = the hash of everything that
shapes a completion (model, problems, sampling, prompt; not ``out``/``limit``/``batch_size``/
``device``); resuming or extending an output made under a different one is a :class:`UserError`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from pydantic import Field

from micota.config import StageConfig
from micota.data.benchmarks import load_problems
from micota.errors import UserError
from micota.generation.backends import Completion, GenerationBackend, SamplingParams, close_backend, make_backend, prompt_token_ids
from micota.generation.prompts import DEFAULT_INSTRUCTION, build_messages, render_prompt, template_hash
from micota.io import atomic_write_json, read_json
from micota.manifest import MANIFEST, read_manifest, write_manifest
from micota.records import JsonlAppender, Problem, Sample, dedupe_by_key, read_jsonl

SHARD_GLOB = "samples-*.jsonl"
TASK_SHARD_GLOB = "tasks/*/" + SHARD_GLOB  # the shards of a split output's tasks (micota.generation.split)
RUN_CONFIG = ".run_config.json"  # the config of the run writing the shards (names changed keys on a mismatch)
# fields that change how work is scheduled or where it goes, not what a completion is
RUN_ONLY = {"out", "limit", "batch_size", "data_dir", "device", "tensor_parallel_size", "benchmarks", "grade_mode",
            "server_url", "served_model_name", "concurrency", "request_timeout", "max_retries",
            "gpu_memory_utilization", "max_model_len", "drop_long_prompts", "tasks", "task"}


class GenerationOptions(StageConfig):
    """Sampling, prompt and loading options shared by ``generate`` and ``eval``."""

    n: int = Field(1, ge=1, description="Completions per problem.")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature; 0 = greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(1024, ge=1, description="Generation limit per completion; a completion cut here counts as wrong.")
    seed: int = Field(0, description="Sampling seed; sampled completion k of a prompt uses sample_seed(seed, prompt, k).")
    backend: str = Field("hf", description="Generation backend: hf, openai (OpenAI-compatible servers), "
                         "vllm (optional extra), or a registered one.")
    batch_size: int = Field(8, ge=1, description="Prompts per batch (rows are flushed to disk per batch).")
    limit: int | None = Field(None, ge=1, description="Use only the first N problems.")
    data_dir: Path | None = Field(None, description="Directory of benchmark JSONL files "
                                  "(else $MICOTA_DATA_DIR, ../shared/data/benchmarks, the hub).")
    instruction: str = Field(DEFAULT_INSTRUCTION, description="Instruction appended to each problem.")
    system: str | None = Field(None, description="System message (default: none, or the chat template's own).")
    use_chat_template: bool = Field(True, description="Render with the model's chat template "
                                    "(--no-chat-template for base models: plain text).",
                                    json_schema_extra={"cli_flag": "chat_template"})
    template: Path | None = Field(None, description="A .jinja chat template file overriding the tokenizer's.")
    dtype: str = Field("auto", description="auto (bf16 on supporting GPUs, fp32 on CPU), bfloat16, float16, float32.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N.")
    allow_pickle: bool = Field(False, description="Allow loading pickle (.bin/.pt) checkpoints: they can run code.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per model (vllm backend).")
    drop_long_prompts: bool = Field(False, description="Skip (and count) problems whose prompt does not fit the "
                                    "model's context; default: refuse them with an error.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Fraction of each GPU's memory vLLM may use (vllm backend).")
    max_model_len: int | None = Field(None, ge=1, description="Longest prompt + completion in tokens (vllm backend; default: the model's).")
    vllm_args: dict[str, Any] = Field(default_factory=dict, description="Further vllm.LLM engine arguments, e.g. "
                                      '{"enforce_eager": true, "enable_prefix_caching": true} (vllm backend).')
    server_url: list[str] = Field(default_factory=list, description="OpenAI-compatible base URL(s) for backend openai, "
                                  "e.g. http://127.0.0.1:8000/v1; repeat the flag for several servers (requests spread over them).",
                                  json_schema_extra={"cli_repeat": True})
    served_model_name: str | None = Field(None, description="Model name sent to the server (default: MODEL; MODEL still supplies the tokenizer).")
    concurrency: int = Field(8, ge=1, description="Requests in flight at once, over all servers (backend openai).")
    request_timeout: float = Field(1800.0, gt=0, description="Seconds one request may take (backend openai).")
    max_retries: int = Field(5, ge=0, description="Retries per request on connection errors, timeouts, 429 and 5xx (backend openai).")
    server_prompt: Literal["auto", "text", "tokens"] = Field(
        "auto", description="Send the rendered prompt as text, as token ids, or auto: token ids only where the "
        "server's tokenization of the text would differ (backend openai).")

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(n=self.n, temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, seed=self.seed)

    def backend_opts(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"batch_size": self.batch_size}
        if self.backend == "vllm":
            opts.update(tensor_parallel_size=self.tensor_parallel_size, gpu_memory_utilization=self.gpu_memory_utilization,
                        max_model_len=self.max_model_len, engine_args=dict(self.vllm_args))
        if self.backend == "openai":
            opts.update(server_url=list(self.server_url), served_model_name=self.served_model_name,
                        concurrency=self.concurrency, request_timeout=self.request_timeout,
                        max_retries=self.max_retries, server_prompt=self.server_prompt)
        return opts

    def template_text(self) -> str | None:
        if self.template is None:
            return None
        try:
            return Path(self.template).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"{self.template}: template file not found") from None


class GenerateConfig(GenerationOptions):
    model: str = Field(description="Model: local HF folder, .gguf file, hub id, or alias smollm2-135m.")
    problems: str = Field(description="Benchmark name (gsm8k, math500, …) or a JSONL file of problems (id, problem, answer).")
    out: Path = Field(description="Output directory (resumed if it exists).")
    tasks: int = Field(1, ge=1, description="Split the problems into N tasks of disjoint problems (problem i -> task "
                       "i mod N), each written to OUT/tasks/task-K-of-N/; the output is finished when every task is.")
    task: int | None = Field(None, ge=0, description="Run only task K (0-based) of --tasks and leave the output "
                             "unfinished (e.g. one Slurm array task); without it every unfinished task runs here, then "
                             "the output is finished.")

    def writer_dir(self) -> Path:
        """The directory this run writes (and locks): a task's own when ``task`` is set."""
        if self.task is None:
            return Path(self.out)
        from micota.generation.split import task_dir

        return task_dir(self.out, self.task, self.tasks)

    def sample_config_hash(self) -> str:
        """Hash of what shapes a completion; stored in every Sample as ``config_hash``."""
        return self.config_hash(exclude=RUN_ONLY & set(type(self).model_fields))


BackendArg = GenerationBackend | Callable[[], GenerationBackend] | None


def build_backend(cfg: GenerationOptions, model: str) -> GenerationBackend:
    return make_backend(cfg.backend, model, dtype=cfg.dtype, device=cfg.device, allow_pickle=cfg.allow_pickle,
                        trust_remote_code=cfg.trust_remote_code, **cfg.backend_opts())


def shard_files(out_dir: str | Path) -> list[Path]:
    """The sample shards of a generate output: its own, then its tasks' (``tasks/*/``), by name."""
    out = Path(out_dir)
    return sorted(out.glob(SHARD_GLOB)) + sorted(out.glob(TASK_SHARD_GLOB))


def load_samples(out_dir: str | Path) -> list[Sample]:
    """Every Sample in a generate output directory, its tasks' included (torn tails dropped; a key
    written twice is kept once, with a warning)."""
    out = Path(out_dir)
    if not out.is_dir():
        raise UserError(f"{out}: no such samples directory")
    rows = [s for f in shard_files(out) for s in read_jsonl(f, Sample, drop_torn_tail=True)]
    return dedupe_by_key(rows, str(out))


def _check_existing(out: Path, chash: str, cfg: "GenerateConfig | None" = None) -> list[Sample]:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if not out.is_dir():
        return []
    man = read_manifest(out)
    if man is not None and man.get("stage") != "generate":
        raise UserError(f"{out}: holds a {man.get('stage')!r} output, not generate samples; choose another --out")
    def changed(old_hash: str | None, stored: dict[str, Any] | None) -> str:
        from micota.rerun import config_changes, describe_changes

        new = cfg.model_dump(mode="json") if cfg is not None else {}
        keys = config_changes(stored or {}, new, RUN_ONLY) if stored and new else []
        return describe_changes(stored or {}, new, keys) if keys else f"{old_hash} != {chash}"

    if man is not None and man.get("sample_config_hash") != chash:
        raise UserError(f"{out}: finished with a different model/sampling/prompt config "
                        f"({changed(man.get('sample_config_hash'), man.get('config'))}); "
                        "pass --overwrite to replace it or choose another --out")
    existing = load_samples(out)
    for s in existing:
        if s.config_hash != chash:
            stored = read_json(out / RUN_CONFIG) if (out / RUN_CONFIG).is_file() else None
            raise UserError(f"{out}: holds unfinished samples from a different config ({changed(s.config_hash, stored)}); "
                            "pass --overwrite to replace them or choose another --out")
    return existing


def generate(cfg: GenerateConfig, *, backend: BackendArg = None) -> Path:
    """Generate ``cfg.n`` samples per problem into ``cfg.out``; resumes; returns the directory.

    ``backend`` may be a ready backend (e.g. wrapping an already-loaded model) or a zero-argument
    callable that builds one; it is only called when there is work to do. With ``tasks > 1`` the
    problems are split into tasks (:func:`micota.generation.split.generate_split`)."""
    if cfg.tasks > 1 or cfg.task is not None:
        from micota.generation.split import generate_split

        return generate_split(cfg, backend=backend)
    problems = load_problems(cfg.problems, data_dir=cfg.data_dir, limit=cfg.limit)
    return generate_part(cfg, Path(cfg.out), problems, backend=backend)


def generate_part(cfg: GenerateConfig, out: Path, problems: list[Problem], *, backend: BackendArg = None,
                  stage: Path | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Generate the missing samples of ``problems`` into ``out`` and write its manifest.

    ``stage`` (default ``out``) is the whole output whose rows count as done: a task of a split
    output (``out`` = the task's directory) skips keys written anywhere in the stage."""
    t0 = time.time()
    template = cfg.template_text()
    stage = stage or out
    chash = cfg.sample_config_hash()
    existing = _check_existing(stage, chash, cfg)
    done = {s.key for s in existing}
    pending = [p for p in problems if any((p.id, i) not in done for i in range(cfg.n))]
    th = existing[0].template_hash if existing else None
    written, skipped = 0, set()
    if pending:
        be = backend if backend is None or isinstance(backend, GenerationBackend) else backend()
        own = be is None  # built here: closed (engine shut down) when this stage ends
        be = be or build_backend(cfg, cfg.model)
        try:
            th, written, skipped = _generate_pending(cfg, be, pending, done, th, chash, out, template,
                                                     len(problems) * cfg.n, stage)
            problems = [p for p in problems if p.id not in skipped]
        finally:
            if own:
                close_backend(be)
    elif stage == out and not out.is_dir():
        raise UserError(f"{cfg.problems}: no problems to generate")
    out.mkdir(parents=True, exist_ok=True)
    ids = {p.id for p in problems}
    samples = load_samples(out) if stage == out else [s for s in load_samples(stage) if s.problem_id in ids]
    keys = {s.key for s in samples}
    want = {(p.id, i) for p in problems for i in range(cfg.n)}
    if not want <= keys:  # cannot happen unless the backend returned fewer completions than asked
        raise UserError(f"{out}: {len(want - keys)} samples missing after generation (backend returned too few)")
    write_generate_manifest(cfg, out, t0=t0, problems=len(problems), samples=samples, written=written,
                            dropped=sorted(skipped), template_hash=th, extra=extra)
    return out


def write_generate_manifest(cfg: GenerateConfig, out: Path, *, t0: float, problems: int, samples: list[Sample],
                            written: int, dropped: list[str], template_hash: str | None,
                            extra: dict[str, Any] | None = None) -> Path:
    """``out/manifest.json`` of a generate output (or of one task of a split one), written last."""
    stop = sum(s.finish_reason == "stop" for s in samples)
    return write_manifest(
        out, stage="generate", config=cfg, started_at=t0,
        inputs={"problems": cfg.problems if Path(cfg.problems).is_file() else None},
        counts={"problems": problems, "samples": len(samples), "generated_this_run": written,
                "dropped_long_prompts": len(dropped),
                "finish_stop": stop, "finish_length": len(samples) - stop},
        extra={"model": cfg.model, "backend": cfg.backend, "template_hash": template_hash,
               "sample_config_hash": cfg.sample_config_hash(), "sampling": cfg.sampling_params().__dict__,
               "dropped_long_prompt_ids": dropped, **(extra or {})},
    )


def _generate_pending(cfg: GenerateConfig, be: GenerationBackend, pending: list[Problem], done: set[tuple[str, int]],
                      th: str | None, chash: str, out: Path, template: str | None, n_wanted: int,
                      stage: Path) -> tuple[str, int, set[str]]:
    """Render the pending problems and write their samples into a new shard; (template hash, rows
    written, ids of problems skipped because their prompt does not fit the context)."""
    tok = be.tokenizer
    th_now = template_hash(tok, use_chat_template=cfg.use_chat_template, template=template,
                           instruction=cfg.instruction, system=cfg.system)
    if th is not None and th != th_now:
        raise UserError(f"{out}: existing samples used another prompt template ({th} != {th_now}); choose another --out")
    th = th_now
    prompts = {p.id: render_prompt(tok, build_messages(p.problem, instruction=cfg.instruction, system=cfg.system),
                                   use_chat_template=cfg.use_chat_template, template=template) for p in pending}
    ntok = {pid: len(prompt_token_ids(tok, s)) for pid, s in prompts.items()}
    skipped = _too_long(cfg, be, pending, ntok)
    pending = [p for p in pending if p.id not in skipped]
    pending.sort(key=lambda p: ntok[p.id])  # similar lengths share a batch
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(SHARD_GLOB):
        JsonlAppender(old).close()  # truncates a torn last line left by a killed run
    for d in {out, stage}:  # extending a finished output (or task): it is unfinished until the end
        (d / MANIFEST).unlink(missing_ok=True)
    atomic_write_json(out / RUN_CONFIG, cfg.model_dump(mode="json"))
    shard = out / f"samples-{len(list(out.glob(SHARD_GLOB))):05d}.jsonl"
    return th, _run(cfg, be, pending, prompts, ntok, done, th, chash, shard, n_wanted), skipped


def context_length(be: GenerationBackend) -> int | None:
    """The model's context in tokens (``max_position_embeddings``), if the backend has a model."""
    n = getattr(getattr(getattr(be, "model", None), "config", None), "max_position_embeddings", None)
    return n if isinstance(n, int) and n > 0 else None


def _too_long(cfg: GenerateConfig, be: GenerationBackend, pending: list[Problem], ntok: dict[str, int]) -> set[str]:
    """Ids of problems whose prompt does not fit the model's context: an error unless ``drop_long_prompts``."""
    ctx = context_length(be)
    too_long = [p for p in pending if ctx is not None and ntok[p.id] >= ctx]
    if too_long and not cfg.drop_long_prompts:
        raise UserError(f"problem {too_long[0].id!r}: prompt of {ntok[too_long[0].id]:,} tokens does not fit the "
                        f"model's context of {ctx:,} ({len(too_long)} such problems; --drop-long-prompts skips and counts them)")
    if too_long:
        print(f"warning: skipping {len(too_long)} problems whose prompt exceeds the {ctx:,}-token context", file=sys.stderr)
    return {p.id for p in too_long}


def _results(be: GenerationBackend, batches: list[list[Problem]], prompts: dict[str, str],
             params: SamplingParams) -> Iterator[list[tuple[Problem, list[Completion]]]]:
    """Groups of (problem, completions) to write together: the backend's batches, or for a
    streaming backend every ``batch_size`` prompts in the order their completions arrive."""
    stream = getattr(be, "generate_stream", None)
    if not callable(stream):
        for batch in batches:
            yield list(zip(batch, be.generate([prompts[p.id] for p in batch], params)))
        return
    flat = [p for b in batches for p in b]
    size = max(len(b) for b in batches)
    group: list[tuple[Problem, list[Completion]]] = []
    try:
        for i, comps in stream([prompts[p.id] for p in flat], params):
            group.append((flat[i], comps))
            if len(group) >= size:
                yield group
                group = []
    except (Exception, KeyboardInterrupt):  # a dead server, Ctrl-C: what already arrived is still written
        if group:
            yield group
        raise
    if group:
        yield group


def _run(cfg: GenerateConfig, be: GenerationBackend, pending: list[Problem], prompts: dict[str, str],
         ntok: dict[str, int], done: set[tuple[str, int]], th: str, chash: str, shard: Path, n_wanted: int) -> int:
    from micota.progress import counted_write, progress_bar

    params = cfg.sampling_params()
    written = 0
    batches = [pending[i:i + cfg.batch_size] for i in range(0, len(pending), cfg.batch_size)]
    todo = sum((p.id, i) not in done for p in pending for i in range(cfg.n))
    with JsonlAppender(shard) as w, progress_bar(n_wanted, desc=f"generate {Path(cfg.out).name}",
                                                 done=n_wanted - todo) as bar:
        for group in _results(be, batches, prompts, params):
            rows = []
            for p, comps in group:
                for idx, c in enumerate(comps[:cfg.n]):
                    if (p.id, idx) in done:
                        continue
                    rows.append(Sample(
                        problem_id=p.id, sample_idx=idx, model=cfg.model, prompt=prompts[p.id], completion=c.text,
                        finish_reason=c.finish_reason, prompt_tokens=ntok[p.id], completion_tokens=c.completion_tokens,
                        template_hash=th, config_hash=chash, seed=cfg.seed, source=p.source, problem=p.problem,
                        reference=p.answer))
            with counted_write():  # Ctrl-C between the write and the count would report a batch too few
                written += w.write_batch(rows)
                bar.update(len(rows))
    return written
