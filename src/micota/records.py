"""The JSONL records every stage passes on, and the readers/writers for them.

Records (pydantic models, one JSON object per line):

- :class:`Problem` — a math problem with its reference answer (benchmarks, training sets, world).
- :class:`Sample` — one model completion for one problem (``problem_id``, ``sample_idx``), with the
  ``template_hash``/``config_hash`` of what produced it and, once graded, the grading fields.
- :class:`SftExample` — one conversational prompt/completion pair for SFT. The prompt is stored as
  messages, not a rendered string: the chat template of the model being trained is applied at
  train time (:func:`micota.generation.prompts.render_prompt`).
- :class:`BpcRecord` — bits of one SFT example's completion under a scoring model.
- :class:`BenchmarkSummary` / :class:`EvalSummary` — what ``micota eval`` concludes.

Readers validate every row and name the file and line of a bad one (:class:`UserError`).
:class:`JsonlAppender` is append-only and flushes (and fsyncs) per batch, so a killed job loses at
most the batch in flight; a torn last line (no trailing newline) is dropped when reading a stage's own shards and is an
error in a file the user names.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from micota.errors import UserError
from micota.io import atomic_write_text

FinishReason = Literal["stop", "length"]


class Record(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class Problem(Record):
    id: str
    problem: str
    answer: str
    source: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


class Sample(Record):
    problem_id: str
    sample_idx: int = 0
    model: str
    prompt: str  # exactly the text the model was conditioned on
    completion: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    template_hash: str
    config_hash: str
    seed: int
    source: str = ""  # benchmark or dataset name
    problem: str | None = None  # raw problem text (generate fills it; filter builds SFT prompts from it)
    reference: str | None = None  # reference answer copied from the Problem, for re-grading
    # grading fields (filled by micota.grading)
    extracted: str | None = None
    correct: bool | None = None
    grade_reason: str | None = None
    grade_mode: str | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.problem_id, self.sample_idx)


class SftExample(Record):
    id: str
    problem_id: str
    prompt: list[Message]
    completion: list[Message]
    meta: dict[str, Any] = Field(default_factory=dict)


class BpcRecord(Record):
    id: str
    chars: int
    tokens: int
    nll_bits: float
    bpc: float
    bpt: float
    mean_rank: float | None = None  # with --metrics rsr
    rsr: float | None = None


class BenchmarkSummary(BaseModel):
    model_config = ConfigDict(extra="allow")
    benchmark: str
    grade_mode: str
    n_problems: int
    n_samples_per_problem: int
    accuracy: float  # pass@1 (greedy, n=1) or avg@k (n>1)
    ci95: tuple[float, float]
    pass_at_k: float | None = None
    mean_completion_tokens: float
    median_completion_tokens: float
    truncation_rate: float
    # filled by micota eval since issue 11/13 (optional so older summaries still load)
    ci_method: str | None = None  # "wilson" (n = 1 per problem, or a degenerate bootstrap) or "bootstrap"
    pass_at_k_ci95: tuple[float, float] | None = None
    maj_at_k: float | None = None
    maj_at_k_ci95: tuple[float, float] | None = None
    no_answer_rate: float | None = None
    grader_errors: int = 0
    grader_error_rate: float | None = None
    reasons: dict[str, int] = Field(default_factory=dict)
    efficiency: dict[str, Any] = Field(default_factory=dict)
    problems_file: dict[str, Any] = Field(default_factory=dict)  # {"path", "sha256"}
    warnings: list[str] = Field(default_factory=list)


class EvalSummary(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())
    model: str
    config_hash: str
    benchmarks: list[BenchmarkSummary]
    macro_accuracy: float


R = TypeVar("R", bound=BaseModel)


def _iter_lines(path: Path, *, drop_torn_tail: bool) -> Iterator[tuple[int, str]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a JSONL file") from None
    lines = raw.split(b"\n")
    torn = lines[-1] != b""  # last line has no newline: a write was cut off
    if not torn:
        lines = lines[:-1]
    for i, line in enumerate(lines, start=1):
        if torn and i == len(lines) and drop_torn_tail:
            return
        if not line.strip():
            continue
        try:
            yield i, line.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{path}:{i}: not valid UTF-8") from None


def iter_jsonl(path: str | os.PathLike, model: type[R] | None = None, *, drop_torn_tail: bool = False) -> Iterator[Any]:
    """Yield rows of a JSONL file, validated as ``model`` when given.

    ``drop_torn_tail`` drops a final line without newline (what a killed writer leaves) instead of
    treating it as malformed; resumable stages read their own output this way.
    """
    path = Path(path)
    for i, line in _iter_lines(path, drop_torn_tail=drop_torn_tail):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{i}: malformed JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
        if model is None:
            yield obj
            continue
        try:
            yield model.model_validate(obj)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"]) or "row"
            raise UserError(f"{path}:{i}: bad {model.__name__} row: field '{loc}': {err['msg']}") from None


def read_jsonl(path: str | os.PathLike, model: type[R] | None = None, *, drop_torn_tail: bool = False) -> list[Any]:
    return list(iter_jsonl(path, model, drop_torn_tail=drop_torn_tail))


def read_jsonl_dir(path: str | os.PathLike, model: type[R] | None = None, *, pattern: str = "*.jsonl", drop_torn_tail: bool = True) -> list[Any]:
    """Rows of every shard in a directory (sorted by name), or of a single file.

    A torn last line is dropped only in a directory's shards (what a killed writer leaves); in a
    file the user names it is an error. Rows with a ``key`` (samples: ``(problem_id, sample_idx)``)
    are deduplicated, first wins, with a warning — two writers must never have shared the directory.
    """
    path = Path(path)
    if path.is_file():
        return dedupe_by_key(read_jsonl(path, model), str(path))
    if not path.is_dir():
        raise UserError(f"{path}: no such file or directory")
    rows: list[Any] = []
    for shard in sorted(path.glob(pattern)):
        rows.extend(read_jsonl(shard, model, drop_torn_tail=drop_torn_tail))
    return dedupe_by_key(rows, str(path))


def dedupe_by_key(rows: list[Any], where: str) -> list[Any]:
    """Keep the first row of each ``row.key``; warn on stderr when any were dropped."""
    if not rows or not hasattr(rows[0], "key"):
        return rows
    seen: set[Any] = set()
    kept = [r for r in rows if not (r.key in seen or seen.add(r.key))]
    if len(kept) < len(rows):
        print(f"warning: {where}: {len(rows) - len(kept)} duplicate rows (same problem_id, sample_idx) ignored",
              file=sys.stderr, flush=True)
    return kept


def _line(row: Any) -> str:
    if isinstance(row, BaseModel):
        return row.model_dump_json(exclude_none=False) + "\n"
    return json.dumps(row, ensure_ascii=False) + "\n"


class JsonlAppender:
    """Append-only JSONL writer: ``write_batch`` writes whole lines, flushes and fsyncs.

    Opening repairs a torn tail (a last line without newline left by a killed writer) by
    truncating it, so the file is always a sequence of complete lines.
    """

    def __init__(self, path: str | os.PathLike, *, fsync: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._repair_tail()
        self._f = open(self.path, "a", encoding="utf-8")

    def _repair_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(keep)

    def write_batch(self, rows: Iterable[Any]) -> int:
        text = "".join(_line(r) for r in rows)
        if text:
            self._f.write(text)
            self._f.flush()
            if self._fsync:
                os.fsync(self._f.fileno())
        return text.count("\n")

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[Any]) -> Path:
    """Write a whole JSONL file at once (temp + rename)."""
    return atomic_write_text(path, "".join(_line(r) for r in rows))
