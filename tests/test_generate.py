"""Generation: greedy agreement with transformers, sampling, no recompiles, the CLI, transformers' own generate()."""

import warnings

import pytest
import torch
from helpers import benchmark_module, tiny, word_tokenizer

import awq_ao
from awq_ao import generate as gen
from awq_ao.models import from_hf_model
from awq_ao.models.decode_prep import prepare_for_decode


def prompt(length=5, seed=1):
    return torch.randint(3, 256, (1, length), generator=torch.Generator().manual_seed(seed))


def quantized_tiny(dtype=torch.float32):
    hf = tiny("llama", dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        awq_ao.quantize_(hf, awq_ao.awq_config(bits=4, group_size=16))
    return hf


def hf_greedy(hf, x, n):
    with torch.no_grad():
        return hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=0)


@pytest.mark.parametrize("quantized", [False, True])
def test_greedy_tokens_match_transformers(quantized):
    hf = quantized_tiny() if quantized else tiny("llama")
    x = prompt()
    ours, stats = gen.generate(from_hf_model(hf), x, 12)
    assert torch.equal(ours, hf_greedy(hf, x, 12))
    assert stats.new_tokens == 12 and stats.prompt_tokens == 5 and stats.decode_tokens_per_s > 0


def test_compiled_decode_does_not_recompile():
    model = prepare_for_decode(from_hf_model(quantized_tiny(torch.bfloat16)))
    x = prompt()
    fn = gen.compile_decode("cpu")
    model.setup_caches(1, x.shape[1] + 20)
    first, _ = gen.generate(model, x, 4, decode_fn=fn)  # compiles
    torch._dynamo.utils.counters.clear()
    with torch.compiler.set_stance("fail_on_recompile"):
        out, _ = gen.generate(model, x, 20, decode_fn=fn)
        again, _ = gen.generate(model, x, 20, decode_fn=fn, skip_guards=True)
    assert torch.equal(out, again)
    assert torch.equal(out[:, :first.shape[1]], first)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 0
    eager, _ = gen.generate(model, x, 20)
    # a random tiny model has near-ties; bf16 rounding order (inductor vs eager) may flip a late one
    assert torch.equal(out[:, :13], eager[:, :13])


def test_sampling_respects_top_k_and_seed():
    logits = torch.randn(2, 3, 50)
    top = torch.topk(logits[:, -1], 5).indices
    draws = torch.cat([gen.sample(logits, temperature=1.0, top_k=5) for _ in range(200)], dim=1)
    assert all(set(draws[b].tolist()) <= set(top[b].tolist()) for b in range(2))
    assert len(set(draws[0].tolist())) > 1
    torch.manual_seed(3)
    a = gen.sample(logits, 0.8, None)
    torch.manual_seed(3)
    assert torch.equal(a, gen.sample(logits, 0.8, None))
    assert torch.equal(gen.sample(logits, 0.0), logits[:, -1].argmax(-1, keepdim=True))
    probs = gen.logits_to_probs(logits[:, -1], 1.0, 5)
    assert torch.allclose(probs.sum(-1), torch.ones(2)) and int((probs > 0).sum(-1).max()) == 5


def test_generate_stops_at_eos_and_refuses_bad_input():
    model = from_hf_model(tiny("llama"))
    x = prompt()
    full, _ = gen.generate(model, x, 24)
    eos = int(full[0, 5 + 2])  # the third new token becomes "end of text"
    out, stats = gen.generate(model, x, 24, eos_id=eos, eos_check_every=4)
    assert stats.new_tokens == 4 and torch.equal(out, full[:, :9])
    with pytest.raises(ValueError, match="max_new_tokens"):
        gen.generate(model, x, 0)
    with pytest.raises(ValueError, match="prompt"):
        gen.generate(model, x[0], 4)


def test_weight_bytes_counts_int4_once_before_and_after_prepare():
    hf = quantized_tiny(torch.bfloat16)
    model = from_hf_model(hf)
    before = gen.weight_bytes_per_token(model)
    cfg = hf.config
    k, n_q, n_kv, inter = cfg.hidden_size, cfg.hidden_size, 2 * 16, cfg.intermediate_size
    linear_weights = cfg.num_hidden_layers * (k * (n_q + 2 * n_kv) + n_q * k + 3 * k * inter)
    float_head = cfg.vocab_size * k * 2
    assert float_head + linear_weights // 2 < before < float_head + linear_weights  # int4: ~0.5 B per weight + scales
    prepare_for_decode(model)
    assert gen.weight_bytes_per_token(model) == before
    assert before < gen.weight_bytes_per_token(from_hf_model(tiny("llama", dtype=torch.bfloat16)))


def test_transformers_generate_compiled_with_static_cache_on_awq_ao_model():
    """transformers' own generate(): static cache, compiled decode step, awq_ao int4 weights."""
    from transformers import GenerationConfig
    from transformers.generation import CompileConfig

    hf = quantized_tiny(torch.bfloat16)
    x = prompt()
    eager = hf_greedy(hf, x, 8)
    compile_config = CompileConfig(fullgraph=True, mode="default")
    compile_config._compile_all_devices = True  # transformers compiles only on GPUs unless told
    config = GenerationConfig(cache_implementation="static", max_new_tokens=8, min_new_tokens=8, do_sample=False,
                              pad_token_id=0, compile_config=compile_config)
    torch._dynamo.utils.counters.clear()
    with torch.no_grad():
        out = hf.generate(x, attention_mask=torch.ones_like(x), generation_config=config)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it really compiled
    assert (out == eager).float().mean() > 0.9


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    hf = tiny("llama")
    hf.save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return str(folder)


def test_cli_generates_and_prints_tok_s(tiny_checkpoint, capsys):
    assert gen.main(["--checkpoint", tiny_checkpoint, "--prompt", "w1 w2 w3", "--max-new-tokens", "6",
                     "--dtype", "float32", "--quantize", "rtn", "--group-size", "16", "--no-stop"]) == 0
    out = capsys.readouterr().out
    assert "tok/s" in out and "GB/s" in out and "peak memory" in out
    assert out.strip().splitlines()[-1].startswith("6 tokens")
    assert set(out.strip().splitlines()[-2].split()) <= {f"w{i}" for i in range(253)}  # decoded words


def test_cli_prints_the_answer_up_to_the_end_of_sequence(tiny_checkpoint, capsys, monkeypatch):
    """generate() checks for the end every 8 tokens, so the row holds tokens past it (a chat model's next
    turn): the printed text stops at the first end-of-sequence token."""
    real = gen.generate

    def ends_after_two_words(model, prompt, max_new_tokens, **kwargs):
        _, stats = real(model, prompt, max_new_tokens, **kwargs)
        new = [10, 11, 2, 12, 13] if kwargs.get("eos_id") == 2 else [10, 11, 12]  # w7 w8 </s> w9 w10
        out = torch.cat([prompt, torch.tensor([new])], 1)
        return out, gen.GenerationStats(prompt.shape[1], len(new), stats.prefill_s, stats.decode_s)

    monkeypatch.setattr(gen, "generate", ends_after_two_words)
    assert gen.main(["--checkpoint", tiny_checkpoint, "--prompt", "w1", "--max-new-tokens", "5",
                     "--dtype", "float32"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == "w7 w8" and lines[-1].startswith("5 tokens")
    assert gen.until_eos([10, 11, 12], 2) == [10, 11, 12] and gen.until_eos([2, 5], None) == [2, 5]


def test_cli_awq_needs_calibration_text(tiny_checkpoint, capsys):
    assert gen.main(["--checkpoint", tiny_checkpoint, "--quantize", "awq"]) == 2
    assert "--calibration-text" in capsys.readouterr().err


def test_cli_awq_calibrates_and_quantized_directory_loads_as_is(tiny_checkpoint, tmp_path, capsys):
    text = tmp_path / "calib.txt"
    text.write_text(" ".join(f"w{i % 200}" for i in range(3000)))
    assert gen.main(["--checkpoint", tiny_checkpoint, "--quantize", "awq", "--calibration-text", str(text),
                     "--calibration-samples", "4", "--calibration-seq-len", "32", "--group-size", "16",
                     "--max-new-tokens", "3", "--dtype", "float32"]) == 0
    assert "tok/s" in capsys.readouterr().out
    from awq_ao.models.loading import load_hf_model

    hf, tok = load_hf_model(tiny_checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        awq_ao.quantize_(hf, awq_ao.awq_config(bits=4, group_size=16))
    awq_ao.save_quantized(hf, str(tmp_path / "q"), tokenizer=tok)
    assert gen.main(["--checkpoint", str(tmp_path / "q"), "--prompt", "w5", "--max-new-tokens", "3",
                     "--compile", "--dtype", "float32"]) == 0
    assert "tok/s" in capsys.readouterr().out
    assert gen.main(["--checkpoint", str(tmp_path / "q"), "--quantize", "rtn"]) == 2
    assert "already quantized" in capsys.readouterr().err


def test_cli_names_a_bad_checkpoint(tmp_path, capsys):
    assert gen.main(["--checkpoint", str(tmp_path / "missing.gguf")]) == 2
    assert "missing.gguf" in capsys.readouterr().err


def test_chat_prompt_uses_the_template_and_needs_one():
    tok = word_tokenizer()
    with pytest.raises(ValueError, match="chat template"):
        gen.encode_prompt(tok, "w1 w2", chat=True)
    tok.chat_template = "{% for m in messages %}<s> {{ m['content'] }} </s> {% endfor %}{% if add_generation_prompt %}<s>{% endif %}"
    ids = gen.encode_prompt(tok, "w1 w2", chat=True)
    assert ids == tok.convert_tokens_to_ids(["<s>", "w1", "w2", "</s>", "<s>"])
    assert gen.encode_prompt(tok, "w1 w2", chat=False) == tok.convert_tokens_to_ids(["w1", "w2"])


def test_model_check_script_dry_run_and_its_teeth(monkeypatch, capsys):
    """benchmarks/model_check.py (the user's flow, compiled, on a GPU) stays runnable: its CPU dry run passes, and
    a compiled decode that returns wrong tokens fails it."""
    check = benchmark_module("model_check")
    assert check.main(["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("ok  ") == 3 and "0 failed" in out
    monkeypatch.setattr(gen, "compile_decode", lambda device_type: lambda model, token, *args: (token + 1) % 512)
    assert check.main(["--device", "cpu"]) == 1
    assert "FAIL gpt-fast" in capsys.readouterr().out


def test_model_check_tells_a_near_tie_from_a_wrong_token():
    """model_check's compiled-vs-eager rule: the first token where the compiled run leaves the eager one must be
    a near-tie under the eager logits (gap in root mean squares of that position's logits)."""
    check = benchmark_module("model_check")
    p = check.PROMPT
    ref = torch.arange(p + 4).unsqueeze(0) % 7
    logits = torch.zeros(1, p + 4, 7)
    logits[0, p + 1, :] = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    logits[0, p + 1, ref[0, p + 2]] = 6.01  # ref's pick for new token 2, just above the runner-up (6)
    assert check.divergence_margin(ref.clone(), ref, logits) == (4, 0.0)
    near, far = ref.clone(), ref.clone()
    near[0, p + 2] = 6
    far[0, p + 2:] = 1  # the lowest logit but ref's own, then anything after it
    rms = logits[0, p + 1].square().mean().sqrt().item()
    step, gap = check.divergence_margin(near, ref, logits)
    assert step == 2 and abs(gap - 0.01 / rms) < 1e-6
    assert check.follows_eager("x", near, ref, logits)[1]
    step, gap = check.divergence_margin(far, ref, logits)
    assert step == 2 and abs(gap - 5.01 / rms) < 1e-5
    assert not check.follows_eager("x", far, ref, logits)[1]


def test_cpu_benchmarks_name_the_cpu_they_ran_on(tmp_path):
    """bench_decode / bench_cpu_linear headers: the model name and the bf16 / vnni extensions from cpuinfo (the
    same script gave 2x other numbers on another day's CPU), a plain fallback without it."""
    machine = benchmark_module("machine")
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n"
                    "processor\t: 1\nmodel name\t: Some CPU 9000\n")
    text = machine.cpu_description(str(info))
    assert text.startswith("Some CPU 9000, torch kernels ") and "avx512_bf16" in text and "vnni" not in text
    assert text.endswith(f"{torch.get_num_threads()} threads")
    info.write_text("model name\t: Old CPU\nflags\t\t: fpu sse2 avx2\n")
    assert "no bf16 / vnni extensions" in machine.cpu_description(str(info))
    assert "no bf16 / vnni extensions" in machine.cpu_description(str(tmp_path / "missing"))
    for script in ("bench_decode", "bench_cpu_linear"):  # loaded by file, as the tests load them, they find it
        assert benchmark_module(script).cpu_description.__doc__ == machine.cpu_description.__doc__
