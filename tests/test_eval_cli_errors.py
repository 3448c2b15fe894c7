"""Bad input to `micota generate` / `micota eval`: one line, exit 2, no traceback, no complete output."""

from __future__ import annotations

import json

import numpy as np
import pytest


def _write_gguf(path, arch):
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_context_length(32)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _case(name, tmp_path, tiny_model_dir, data_dir):
    """(argv, expected fragment of the error line) for one bad input."""
    gen = ["generate", str(tiny_model_dir), "--out", str(tmp_path / "out")]
    ev = ["--benchmarks", "gsm8k", "--limit", "2", "--data-dir", str(data_dir), "--out", str(tmp_path / "out")]
    if name == "missing_problems":
        return gen + ["--problems", str(tmp_path / "nope.jsonl")], "nope.jsonl: problems file not found"
    if name == "malformed_jsonl":
        f = tmp_path / "p.jsonl"
        f.write_text(json.dumps({"id": "a", "problem": "1+1?", "answer": "2"}) + "\n{\"id\": \"b\", \"problem\n")
        return gen + ["--problems", str(f)], "p.jsonl:2: malformed JSON"
    if name == "unknown_benchmark":
        return ["eval", str(tiny_model_dir), *ev[:-4], "--out", str(tmp_path / "out"), "--benchmarks", "gsm8k,aime99"], "unknown benchmark 'aime99'"
    if name == "no_weights":
        d = tmp_path / "empty_model"
        d.mkdir()
        (d / "config.json").write_text((tiny_model_dir / "config.json").read_text())
        return ["eval", str(d), *ev], "has no weights"
    if name == "pickle_only":
        d = tmp_path / "pickled"
        d.mkdir()
        (d / "config.json").write_text((tiny_model_dir / "config.json").read_text())
        (d / "pytorch_model.bin").write_bytes(b"not really a pickle")
        return ["eval", str(d), *ev], "--allow-pickle"
    if name == "gguf_arch":
        return ["eval", str(_write_gguf(tmp_path / "weird.gguf", "mamba-xyz")), *ev], "architecture mamba-xyz is not supported"
    if name == "n_zero":
        return ["eval", str(tiny_model_dir), *ev, "--n", "0"], "n: Input should be greater than or equal to 1"
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["missing_problems", "malformed_jsonl", "unknown_benchmark", "no_weights", "pickle_only",
                                  "gguf_arch", "n_zero"])
def test_bad_input_is_one_line_exit_2_and_no_output(name, tmp_path, tiny_model_dir, data_dir, cli):
    argv, fragment = _case(name, tmp_path, tiny_model_dir, data_dir)
    r = cli(*argv, env={"MICOTA_CACHE": str(tmp_path / "cache")})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    out = tmp_path / "out"
    assert not out.exists() or not list(out.rglob("manifest.json"))
