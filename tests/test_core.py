"""Records, atomic IO, configs, manifests and the CLI error contract."""

from __future__ import annotations

import json

import pytest

from micota.config import StageConfig, load_config
from micota.errors import UserError
from micota.io import atomic_dir, atomic_write_json, sha256_path
from micota.manifest import is_complete, read_manifest, write_manifest
from micota.records import JsonlAppender, Problem, Sample, read_jsonl


def _sample(i: int) -> Sample:
    return Sample(problem_id=f"p{i}", sample_idx=0, model="m", prompt="q", completion="a", finish_reason="stop",
                  prompt_tokens=1, completion_tokens=1, template_hash="t", config_hash="c", seed=0)


def test_reader_names_file_and_line_of_bad_row(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"id": "a", "problem": "x", "answer": "1"}\n{"id": "b", "problem": "y"}\n')
    with pytest.raises(UserError, match=r"p\.jsonl:2: .*'answer'"):
        read_jsonl(f, Problem)
    f.write_text('{"id": "a", "problem": "x", "answer": "1"}\n{not json\n')
    with pytest.raises(UserError, match=r"p\.jsonl:2: malformed JSON"):
        read_jsonl(f, Problem)


def test_appender_repairs_torn_tail_and_reader_drops_it(tmp_path):
    f = tmp_path / "s.jsonl"
    with JsonlAppender(f) as w:
        w.write_batch([_sample(0), _sample(1)])
    with open(f, "a") as fh:
        fh.write('{"problem_id": "p2", "sampl')  # a killed writer
    assert [s.problem_id for s in read_jsonl(f, Sample, drop_torn_tail=True)] == ["p0", "p1"]
    with pytest.raises(UserError):
        read_jsonl(f, Sample)
    with JsonlAppender(f) as w:
        w.write_batch([_sample(3)])
    assert [s.problem_id for s in read_jsonl(f, Sample)] == ["p0", "p1", "p3"]


def test_atomic_dir_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as d:
            (d / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(out) as d:
        (d / "full.txt").write_text("x")
    assert (out / "full.txt").read_text() == "x"


class _Cfg(StageConfig):
    lr: float = 1e-5
    epochs: int = 2


def test_config_yaml_overrides_and_unknown_key(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("lr: 0.001\nepochs: 3\n")
    cfg = load_config(_Cfg, y, epochs=5)
    assert (cfg.lr, cfg.epochs) == (0.001, 5)
    assert cfg.config_hash() != _Cfg().config_hash()
    y.write_text("lrr: 0.1\n")
    with pytest.raises(UserError, match="lrr: unknown key"):
        load_config(_Cfg, y)


def test_manifest_roundtrip_and_hash_ignores_hidden(tmp_path):
    (tmp_path / "a.jsonl").write_text("x\n")
    h = sha256_path(tmp_path)
    (tmp_path / ".tmp.partial").write_text("junk")
    assert sha256_path(tmp_path) == h
    assert not is_complete(tmp_path)
    write_manifest(tmp_path, stage="t", config=_Cfg(), inputs={"data": tmp_path / "a.jsonl"}, counts={"n": 1})
    m = read_manifest(tmp_path)
    assert m["complete"] and m["config_hash"] == _Cfg().config_hash() and m["counts"] == {"n": 1}
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
