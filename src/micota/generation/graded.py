"""Graded samples of a stored eval/generate output (read by the report, the merge search and tests).

``load_graded(DIR)`` reads ``DIR/graded.jsonl`` if an eval wrote one, else every ``samples-*.jsonl``
shard under DIR (torn tails dropped); samples not graded yet are graded here by their source's mode,
and a completion cut by ``max_new_tokens`` (``finish_reason == "length"``) counts as wrong.
"""

from __future__ import annotations

from pathlib import Path

from micota.errors import UserError
from micota.generation.runner import SHARD_GLOB
from micota.records import Sample, read_jsonl


def sample_files(d: Path) -> list[Path]:
    """The sample files of an output directory: graded.jsonl, else the generate shards."""
    if not d.is_dir():
        raise UserError(f"{d}: no such stage output directory")
    if (d / "graded.jsonl").is_file():
        return [d / "graded.jsonl"]
    files = sorted(d.rglob(SHARD_GLOB))
    if not files:
        raise UserError(f"{d}: no graded.jsonl or samples-*.jsonl")
    return files


def load_graded(d: str | Path) -> tuple[list[Sample], list[Path]]:
    """Samples of an eval/generate output, graded (ungraded ones are graded here, by source's mode),
    and the files they came from."""
    files = sample_files(Path(d))
    rows: list[Sample] = [s for f in files for s in read_jsonl(f, Sample, drop_torn_tail=True)]
    todo = [i for i, s in enumerate(rows) if s.correct is None]
    if todo:
        from micota.grading import grade_samples  # mode=None: each sample's benchmark mode

        for i, s in zip(todo, grade_samples([rows[i] for i in todo])):
            rows[i] = s
    rows = [s.model_copy(update={"correct": False}) if s.finish_reason == "length" else s for s in rows]
    return rows, files
