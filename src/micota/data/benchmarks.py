"""Benchmark registry: where each evaluation set lives and how it is graded.

Each :class:`BenchmarkSpec` names a local JSONL file (rows of :class:`micota.records.Problem`:
``id, problem, answer`` + source fields) and the Hugging Face dataset it comes from. Loading looks
for the file in, in order: the ``data_dir`` argument, ``$MICOTA_DATA_DIR``, and
``../shared/data/benchmarks`` beside the current directory or the repository. Only when no local
file exists is the hub tried (``datasets``, imported lazily); offline that is a :class:`UserError`
naming the missing file and the environment variable.

Register more with :func:`register_benchmark`. ``BenchmarkSpec.grade_mode`` is THE benchmark →
grading-mode table: eval, filter and report all read it through :func:`grade_mode_for`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from micota.errors import UserError
from micota.records import Problem, read_jsonl

ENV_DATA_DIR = "MICOTA_DATA_DIR"
_REPO = Path(__file__).resolve().parents[3]


def _first(v: Any) -> str:
    return str(v[0]) if isinstance(v, (list, tuple)) else str(v)


def _after_hashes(v: Any) -> str:
    return str(v).split("####")[-1].strip()


def _drop_dot_zero(v: Any) -> str:
    s = str(v)
    return s[:-2] if s.endswith(".0") else s


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    filename: str  # local JSONL of Problem rows
    hub_id: str
    hub_split: str
    grade_mode: str = "default"
    hub_config: str | None = None
    # hub field mapping: Problem field <- dataset column (id None: the row index)
    fields: dict[str, str | None] = field(default_factory=lambda: {"id": "id", "problem": "problem", "answer": "answer"})
    answer_fn: Callable[[Any], str] = str
    id_prefix: str = ""


BENCHMARKS: dict[str, BenchmarkSpec] = {}


def register_benchmark(spec: BenchmarkSpec) -> BenchmarkSpec:
    BENCHMARKS[spec.name] = spec
    return spec


for _spec in [
    BenchmarkSpec("gsm8k", "gsm8k.jsonl", "openai/gsm8k", "test", "gsm8k", hub_config="main",
                  fields={"id": None, "problem": "question", "answer": "answer"}, answer_fn=_after_hashes, id_prefix="gsm8k-test-"),
    BenchmarkSpec("math500", "math500.jsonl", "HuggingFaceH4/MATH-500", "test",
                  fields={"id": "unique_id", "problem": "problem", "answer": "answer"}),
    BenchmarkSpec("aime24", "aime24.jsonl", "HuggingFaceH4/aime_2024", "train", id_prefix="aime24-"),
    BenchmarkSpec("aime25", "aime25.jsonl", "math-ai/aime25", "test", id_prefix="aime25-"),
    BenchmarkSpec("amc23", "amc23.jsonl", "math-ai/amc23", "test", answer_fn=_drop_dot_zero, id_prefix="amc23-",
                  fields={"id": "id", "problem": "question", "answer": "answer"}),
    BenchmarkSpec("olympiadbench", "olympiadbench.jsonl", "Hothan/OlympiadBench", "train", hub_config="OE_TO_maths_en_COMP",
                  fields={"id": "id", "problem": "question", "answer": "final_answer"}, answer_fn=_first, id_prefix="olympiadbench-"),
]:
    register_benchmark(_spec)


def get_spec(name: str) -> BenchmarkSpec:
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r} (known: {', '.join(BENCHMARKS)}; or pass a .jsonl file of problems)")
    return BENCHMARKS[name]


def grade_mode_for(source: str | None) -> str:
    """The grading mode of benchmark ``source`` (``default`` for anything not registered)."""
    spec = BENCHMARKS.get(source or "")
    return spec.grade_mode if spec is not None else "default"


def data_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Candidate local directories, in search order."""
    dirs = [Path(data_dir)] if data_dir else []
    if os.environ.get(ENV_DATA_DIR):
        dirs.append(Path(os.environ[ENV_DATA_DIR]))
    for base in (Path.cwd(), _REPO):
        dirs.append(base.parent / "shared" / "data" / "benchmarks")
    return dirs


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _from_hub(spec: BenchmarkSpec, searched: list[Path]) -> list[Problem]:
    where = ", ".join(str(d) for d in dict.fromkeys(searched)) or "(none)"
    hint = f"{spec.filename} not found in {where}; set --data-dir or ${ENV_DATA_DIR}"
    if _offline():
        raise UserError(f"benchmark {spec.name!r}: {hint} (offline, so the hub copy {spec.hub_id} cannot be fetched)")
    try:
        import datasets

        ds = datasets.load_dataset(spec.hub_id, spec.hub_config, split=spec.hub_split)
    except Exception as e:  # network, auth, missing dataset: all one line for the user
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"benchmark {spec.name!r}: {hint} (hub {spec.hub_id} failed: {why})") from None
    f = spec.fields
    out = []
    for i, row in enumerate(ds):
        pid = str(row[f["id"]]) if f.get("id") else str(i)
        out.append(Problem(id=spec.id_prefix + pid, problem=str(row[f["problem"]]), answer=spec.answer_fn(row[f["answer"]]),
                           source=spec.name))
    return out


def benchmark_path(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local JSONL file benchmark ``name`` is read from, or None (then it comes from the hub)."""
    spec = get_spec(name)
    path = next((d / spec.filename for d in data_dirs(data_dir) if (d / spec.filename).is_file()), None)
    if data_dir and path is None and not Path(data_dir).is_dir():
        raise UserError(f"--data-dir {data_dir}: no such directory")
    return path


def problems_source(spec: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> dict[str, str | None]:
    """Where a benchmark/problems file came from: ``{"path", "sha256"}`` (hub id and no hash if remote)."""
    from micota.io import sha256_file

    s = os.fspath(spec)
    path = benchmark_path(s, data_dir) if s in BENCHMARKS else Path(s).expanduser()
    if path is None or not Path(path).is_file():
        return {"path": f"hub:{get_spec(s).hub_id}" if s in BENCHMARKS else s, "sha256": None}
    return {"path": str(Path(path).resolve()), "sha256": sha256_file(path)}


def load_benchmark(name: str, *, data_dir: str | os.PathLike | None = None, limit: int | None = None) -> list[Problem]:
    """The problems of benchmark ``name`` (first ``limit`` of them), ``source`` set to the name."""
    spec = get_spec(name)
    dirs = data_dirs(data_dir)
    path = benchmark_path(name, data_dir)
    problems = read_jsonl(path, Problem) if path else _from_hub(spec, dirs)
    problems = problems[:limit] if limit is not None else problems
    return [p.model_copy(update={"source": p.source or spec.name}) for p in problems]


def load_problems(spec: str | os.PathLike, *, data_dir: str | os.PathLike | None = None, limit: int | None = None) -> list[Problem]:
    """A benchmark name, a JSONL file of Problem rows (``id, problem, answer`` at least), or a
    directory holding one as ``data.jsonl``."""
    s = os.fspath(spec)
    if s in BENCHMARKS:
        return load_benchmark(s, data_dir=data_dir, limit=limit)
    p = Path(s).expanduser()
    if p.is_dir() and (p / "data.jsonl").is_file():  # a stage output holding problems (micota decontaminate)
        p = p / "data.jsonl"
    if p.suffix in (".jsonl", ".json") or os.sep in s or p.exists():
        if not p.is_file():
            raise UserError(f"{p}: problems file not found")
        problems = read_jsonl(p, Problem)
        if not problems:
            raise UserError(f"{p}: no problems in file")
        seen: set[str] = set()
        for q in problems:
            if q.id in seen:
                raise UserError(f"{p}: duplicate problem id {q.id!r}")
            seen.add(q.id)
        problems = problems[:limit] if limit is not None else problems
        stem = p.parent.name if p.name == "data.jsonl" else p.stem
        return [q.model_copy(update={"source": q.source or stem}) for q in problems]
    get_spec(s)  # raises: unknown benchmark, listing known ones
    raise AssertionError
