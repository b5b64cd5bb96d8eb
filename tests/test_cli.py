"""The awq-ao command line on a tiny model (fast) and on the shared SmolLM2 end to end (slow)."""

import os

import pytest
import torch
from helpers import shared_dir, tiny, word_tokenizer

from awq_ao import cli

GGUF = os.path.join(shared_dir(), "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
TEXT_DIR = os.path.join(shared_dir(), "data", "wikitext-2")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    tiny("llama").save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    text = folder / "text.txt"
    text.write_text(" ".join(f"w{(i * 7) % 200}" for i in range(4000)))
    return str(folder), str(text)


def test_quantize_eval_generate_export_on_a_tiny_model(tiny_model, tmp_path, capsys):
    model, text = tiny_model
    out, gemm = str(tmp_path / "q"), str(tmp_path / "gemm")
    assert cli.main(["quantize", model, "--output", out, "--calibration-text", text, "--samples", "4",
                     "--seq-len", "32", "--group-size", "16", "--gqa", "fold", "--dtype", "float32"]) == 0
    assert "saved" in capsys.readouterr().out
    assert cli.main(["eval", out, "--text", text, "--chunks", "2", "--seq-len", "64"]) == 0
    ppl_native = float(capsys.readouterr().out.split("ppl=")[1].split()[0])
    assert cli.main(["generate", out, "--prompt", "w1 w2", "--max-new-tokens", "4"]) == 0
    assert "tok/s" in capsys.readouterr().out
    assert cli.main(["export", out, "--format", "awq", "--output", gemm]) == 0
    capsys.readouterr()
    assert cli.main(["eval", gemm, "--text", text, "--chunks", "2", "--seq-len", "64", "--dtype", "float32"]) == 0
    ppl_gemm = float(capsys.readouterr().out.split("ppl=")[1].split()[0])
    assert abs(ppl_gemm - ppl_native) / ppl_native < 1e-2  # scales rounded to fp16, nothing else changes
    assert cli.main(["generate", gemm, "--prompt", "w1 w2", "--max-new-tokens", "4"]) == 0
    assert "tok/s" in capsys.readouterr().out


def test_user_mistakes_are_one_line_errors(tiny_model, tmp_path, capsys):
    model, text = tiny_model
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    assert cli.main(["quantize", model, "--output", str(tmp_path / "full"), "--rtn"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main(["eval", str(tmp_path / "nope"), "--text", text]) == 2
    assert "nope" in capsys.readouterr().err
    assert cli.main(["eval", model, "--text", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt" in capsys.readouterr().err
    assert cli.main(["export", model, "--format", "gguf", "--output", str(tmp_path / "x")]) == 2
    assert "'awq'" in capsys.readouterr().err
    out = str(tmp_path / "pre")
    assert cli.main(["quantize", model, "--output", out, "--calibration-text", text, "--samples", "4",
                     "--seq-len", "32", "--group-size", "16", "--gqa", "pre_scale"]) == 0
    capsys.readouterr()
    assert cli.main(["export", out, "--output", str(tmp_path / "gemm")]) == 2
    err = capsys.readouterr().err
    assert "act_pre_scale" in err and "gqa='fold'" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "gemm")


def test_default_model_prefers_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AWQ_AO_MODEL", str(tmp_path))
    with pytest.raises(cli.UserError, match="AWQ_AO_MODEL"):
        cli.default_model()
    (tmp_path / cli.DEFAULT_GGUF).write_bytes(b"")
    assert cli.default_model() == os.path.join(str(tmp_path), cli.DEFAULT_GGUF)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(GGUF), reason=f"{GGUF} not found")
def test_cli_end_to_end_on_smollm2(tmp_path, capsys, monkeypatch):
    """The README's main job: quantize (default model, small budget, g64), eval, generate, export, import."""
    pytest.importorskip("gguf")
    monkeypatch.setenv("AWQ_AO_MODEL", os.path.dirname(GGUF))
    out, gemm = str(tmp_path / "smollm2-awq"), str(tmp_path / "smollm2-gemm")
    test_text = os.path.join(TEXT_DIR, "test.txt")
    assert cli.main(["quantize", "--output", out, "--calibration-text", os.path.join(TEXT_DIR, "valid.txt"),
                     "--samples", "4", "--seq-len", "256", "--group-size", "64", "--gqa", "fold"]) == 0
    assert "saved" in capsys.readouterr().out
    assert cli.main(["eval", out, "--text", test_text, "--chunks", "2", "--seq-len", "256"]) == 0
    ppl = float(capsys.readouterr().out.split("ppl=")[1].split()[0])
    assert 5 < ppl < 80, ppl  # float SmolLM2 is about 26 at 512 tokens; int4 with a tiny budget stays near
    assert cli.main(["generate", out, "--prompt", "The capital of France is", "--max-new-tokens", "8"]) == 0
    assert "tok/s" in capsys.readouterr().out
    assert cli.main(["export", out, "--format", "awq", "--output", gemm]) == 0
    capsys.readouterr()
    assert cli.main(["eval", gemm, "--text", test_text, "--chunks", "2", "--seq-len", "256",
                     "--dtype", "bfloat16"]) == 0
    ppl_gemm = float(capsys.readouterr().out.split("ppl=")[1].split()[0])
    assert abs(ppl_gemm - ppl) / ppl < 0.03, (ppl, ppl_gemm)
    assert cli.main(["generate", gemm, "--prompt", "The capital of France is", "--max-new-tokens", "8"]) == 0
    assert "tok/s" in capsys.readouterr().out


def test_calibration_from_dataset_rows(tiny_model, monkeypatch):
    """--calibration-dataset goes through samples_from_dataset (here with in-memory rows: no network)."""
    import argparse
    import sys
    import types

    rows = [{"text": " ".join(f"w{(i * 3 + j) % 200}" for j in range(50))} for i in range(40)] + [{"text": "  "}]
    fake = types.SimpleNamespace(load_dataset=lambda name, config, split: rows)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    args = argparse.Namespace(calibration_text=None, calibration_dataset="wikitext", samples=4, seq_len=32)
    samples = cli._calibration_samples(args, word_tokenizer())
    assert samples.shape == (4, 32) and samples.dtype == torch.long
    assert torch.equal(samples, cli._calibration_samples(args, word_tokenizer()))  # deterministic windows
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(cli.UserError, match="--calibration-text"):
        cli._calibration_samples(args, word_tokenizer())
