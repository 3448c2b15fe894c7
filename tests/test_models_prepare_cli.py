"""`micota models prepare`: prints the converted default model's folder; unknown alias is exit 2."""

from __future__ import annotations

from pathlib import Path


def test_models_prepare_prints_the_safetensors_folder(cli, smollm2_dir):
    r = cli("models", "prepare", "smollm2-135m")
    assert r.returncode == 0, r.stderr
    folder = Path(r.stdout.strip())
    assert folder == Path(smollm2_dir) and (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    bad = cli("models", "prepare", "gpt-7")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: unknown default model 'gpt-7' (known: smollm2-135m)"
