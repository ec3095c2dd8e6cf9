"""Inference precision (regional_tinystories.quantize): bf16 weights cast once and int8 weights, checked against fp32
greedy decoding of a trained model, and the settings that cannot run refused in one line."""
import json
from types import SimpleNamespace

import pytest
import torch
from helpers import load_script, run_main, train_small_model
from torch import nn

from regional_tinystories import quantize, runtime, training
from regional_tinystories.checkpoint import load_model
from regional_tinystories.config import ConfigError
from regional_tinystories.sampling import (
    SamplingConfig,
    encode_prompt,
    generate_stories,
)

sample_script = load_script("training-inference/sample.py")
serve_script = load_script("training-inference/serve.py")
eval_bpb = load_script("scripts/eval_bpb.py")

PROMPTS = ["एक दिन छोटी मीरा", "Tom had a", "একদিন ছোট্ট", "Lily saw a small", "राजू का कुत्ता", "The sun was"]
NEW_TOKENS = 40


def read_json(path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, data root) of a 2-layer modern model trained for 60 steps on the tests' multilingual stories."""
    return train_small_model(tmp_path_factory.mktemp("quantize"), n_embd=64)


def greedy(model, tokenizer):
    """(rows, prompt length): NEW_TOKENS greedy tokens after every prompt (one batch per prompt, as sample.py)."""
    greedy_settings = SamplingConfig(max_new_tokens=NEW_TOKENS, temperature=0)
    rows = []
    for prompt in PROMPTS:
        ids = encode_prompt(tokenizer, prompt, model.config.block_size)
        rows.append(model.generate(torch.tensor([ids]), greedy_settings)[0, len(ids):].tolist())
    return rows


def tokens_in_agreement(rows, reference):
    """For each prompt, how many tokens the two decodings share before they first differ."""
    return [next((i for i, (a, b) in enumerate(zip(row, ref)) if a != b), len(ref)) for row, ref in zip(rows, reference)]


@pytest.mark.parametrize("dtype, quantize_setting", [("bfloat16", "none"), ("float32", "int8")])
def test_greedy_decoding_agrees_with_fp32(trained, dtype, quantize_setting):
    """The issue's bound: at least 20 tokens of greedy decoding as in fp32, for every prompt. (Measured on this
    model: bf16 and int8 agree with fp32 for all 40 tokens of all six prompts. A larger model whose top two tokens
    are often near-ties parts from fp32 greedy earlier on some prompts: measured in the README, Performance.)"""
    model, tokenizer, _ = load_model(str(trained[0]))
    reference = greedy(model, tokenizer)
    quantize.prepare(model, dtype, quantize_setting)
    agreement = tokens_in_agreement(greedy(model, tokenizer), reference)
    assert min(agreement) >= 20, agreement


def test_bf16_weights_are_cast_once_and_the_rope_table_stays_fp32(trained):
    model, _, _ = load_model(str(trained[0]))
    idx = torch.tensor([[1, 40, 41, 42, 43]])
    with torch.no_grad():
        fp32_logits, _ = model(idx)
    quantize.prepare(model, "bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}  # norms and embeddings included
    assert model.lm_head.weight is model.wte.weight  # still tied
    # the RoPE table (cos, sin) stays fp32: the rotation is computed in fp32, from angles bf16 would round
    assert model.rope_freqs.dtype == torch.float32
    with torch.no_grad():
        bf16_logits, _ = model(idx)
    assert bf16_logits.dtype == torch.bfloat16
    assert torch.allclose(bf16_logits.float(), fp32_logits, atol=0.15)
    assert bf16_logits.float().argmax(-1).equal(fp32_logits.argmax(-1))


@pytest.mark.parametrize("column_major", [True, False])
def test_fp32_weights_are_stored_in_the_faster_order_with_the_same_logits_and_greedy_tokens(trained, monkeypatch,
                                                                                          column_major):
    """quantize.prepare stores each linear weight in whichever memory order column_major_is_faster (a timing) picks;
    forced both ways here, the model computes the same logits and decodes the same tokens, the head still tied."""
    model, tokenizer, _ = load_model(str(trained[0]))
    idx = torch.tensor([[1, 40, 41, 42, 43]])
    with torch.no_grad():
        reference_logits, _ = model(idx)
    reference = greedy(model, tokenizer)
    monkeypatch.setattr(quantize, "column_major_is_faster", lambda shape, dtype, threads: column_major)
    quantize.prepare(model)
    linears = [m.weight for m in model.modules() if type(m) is nn.Linear]
    assert len(linears) == 9  # 2 layers x 4, and the head
    assert all(w.t().is_contiguous() != w.is_contiguous() and w.t().is_contiguous() == column_major for w in linears)
    assert model.lm_head.weight is model.wte.weight
    with torch.no_grad():
        logits, _ = model(idx)
    assert torch.allclose(logits, reference_logits, atol=1e-5)
    assert greedy(model, tokenizer) == reference


def test_the_memory_order_is_timed_once_per_shape():
    quantize.column_major_is_faster.cache_clear()
    assert quantize.column_major_is_faster((64, 32), torch.float32, 1) in (True, False)
    quantize.column_major_is_faster((64, 32), torch.float32, 1)
    quantize.column_major_is_faster((32, 64), torch.float32, 1)
    assert quantize.column_major_is_faster.cache_info().misses == 2


def test_int8_replaces_every_linear_layer_and_keeps_the_embedding(trained):
    model, _, _ = load_model(str(trained[0]))
    embedding = model.wte.weight.detach().clone()
    quantize.prepare(model, quantize="int8")
    assert not [name for name, m in model.named_modules() if type(m) is nn.Linear]
    head = model.lm_head
    assert isinstance(head, quantize.Int8Linear) and isinstance(model.blocks[0].mlp.c_proj, quantize.Int8Linear)
    assert head.weight.dtype == torch.int8 and head.scale.shape == (embedding.size(0),)
    assert model.wte.weight.dtype == torch.float32 and torch.equal(model.wte.weight, embedding)
    # the head is an int8 copy of the tied embedding: within half a quantization step of every row (plus what the
    # clamp at 127 steps of a bf16-rounded scale can add)
    scales = head.scale.float()
    assert torch.all((head.weight.float() * scales[:, None] - embedding).abs() <= scales[:, None] * 0.51 + 1e-6)


@pytest.mark.parametrize("in_features, bias", [(64, False), (48, True), (24, True), (12, True), (7, False)])
def test_int8_linear_computes_the_layer_within_its_quantization_error(in_features, bias):
    """Against the fp32 layer, for 1, 3 and 2 x 5 rows; a width the kernel cannot take (not a multiple of 16: on AVX-512
    the kernel gives wrong products for 24 or 40 and more than one row, or crashes the process) keeps its fp32 layer."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(in_features, 40, bias=bias))
    reference = model[0]
    quantize.quantize_int8(model)
    assert isinstance(model[0], quantize.Int8Linear) == (in_features % 16 == 0)
    with torch.no_grad():
        for shape in ((1, in_features), (3, in_features), (2, 5, in_features)):
            x = torch.randn(shape)
            expected = reference(x)
            error = (model(x) - expected).abs().max() / expected.abs().max()
            assert model(x).shape == expected.shape and model(x).dtype == torch.float32
            assert 0 <= error < 0.02


def test_sample_cli_runs_in_bf16_and_int8(trained, tmp_path):
    run_dir, _ = trained
    stories = {}
    for option in ("--dtype=float32", "--dtype=bfloat16", "--quantize=int8"):
        out = tmp_path / f"{option[2:]}.json"
        result = run_main(sample_script.main, [f"--init_from={run_dir}", "--start=Tom had a", "--temperature=0",
                                               "--max_new_tokens=20", option, "--output_format=json",
                                               f"--out_file={out}"])
        assert result.returncode == 0, result.stderr
        stories[option] = read_json(out)[0]["story"]
    assert "dtype bfloat16" in run_main(sample_script.main, [f"--init_from={run_dir}", "--start=Tom", "--max_new_tokens=2",
                                                             "--dtype=bfloat16"]).stderr
    assert "dtype float32, int8 weights" in run_main(sample_script.main, [f"--init_from={run_dir}", "--start=Tom",
                                                                          "--max_new_tokens=2", "--quantize=int8"]).stderr
    assert stories["--dtype=bfloat16"] == stories["--dtype=float32"] == stories["--quantize=int8"]


def test_sample_cli_compiled_decoding_writes_the_same_stories(trained, tmp_path):
    """--compile (torch.compile of the one-token step, inductor's C++ wrapper) gives the eager greedy tokens, in fp32
    and with int8 weights, for a batch of two samples; the prompt's prefill stays eager."""
    run_dir, _ = trained
    stories = {}
    for options in ((), ("--compile=True",), ("--quantize=int8",), ("--quantize=int8", "--compile=True")):
        out = tmp_path / f"{len(stories)}.json"
        result = run_main(sample_script.main, [f"--init_from={run_dir}", "--start=Lily saw a small", "--temperature=0",
                                               "--max_new_tokens=24", "--num_samples=2", *options,
                                               "--output_format=json", f"--out_file={out}"])
        assert result.returncode == 0, result.stderr
        stories[options] = [record["story"] for record in read_json(out)]
    assert stories[("--compile=True",)] == stories[()]
    assert stories[("--quantize=int8", "--compile=True")] == stories[("--quantize=int8",)]


@pytest.mark.parametrize("dtype, quantize_setting", [("bfloat16", "none"), ("float32", "int8")])
def test_serve_batches_bf16_and_int8_models_as_sample_py_decodes_them(trained, dtype, quantize_setting):
    """serve.py loads the model in the precision asked for, and its padded, masked batch rows still compute what each
    prompt gets alone from generate_stories (sample.py) with the same weights."""
    cfg = SimpleNamespace(**{**serve_script.DEFAULTS, "init_from": str(trained[0]), "quantize": quantize_setting})
    (slot,) = serve_script.load_slots(cfg, "cpu", dtype)
    if quantize_setting == "int8":
        assert isinstance(slot.model.lm_head, quantize.Int8Linear)
    else:
        assert slot.model.wte.weight.dtype == torch.bfloat16
    requests = [serve_script.StoryRequest(prompt=p, sampling=SamplingConfig(max_new_tokens=12, temperature=0), n=n,
                                          seed=1, stop=[], stream=False) for p, n in ((PROMPTS[0], 1), (PROMPTS[3], 2))]
    together = [serve_script.Generation(slot, r, 60) for r in requests]
    batch = serve_script.DecodeBatch(slot.model)
    with torch.no_grad():
        for g in together:
            batch.add(g)
        assert not bool(batch.valid.all())  # rows of unequal length: padded and masked
        while batch.members:
            batch.step()
            batch.remove_done()
    for r, g in zip(requests, together):
        record = next(generate_stories(slot.model, slot.tokenizer, [r.prompt], r.sampling, num_samples=r.n))
        assert r.prompt + g.choices[0].text == record["story"]


def test_eval_bpb_measures_the_int8_cost(trained, tmp_path):
    run_dir, root = trained
    rows = {}
    for setting in ("none", "int8"):
        eval_bpb.main(["--init_from", str(run_dir), "--data_root", root, "--quantize", setting,
                       "--out_dir", str(tmp_path / setting)])
        (rows[setting],) = read_json(tmp_path / setting / "eval_bpb.json")
    assert (rows["none"]["weights"], rows["int8"]["weights"]) == ("float32", "int8")
    assert rows["int8"]["params"] == rows["none"]["params"]  # counted before the weights became int8
    assert rows["int8"]["bpb"] != rows["none"]["bpb"]  # really evaluated with other weights
    assert abs(rows["int8"]["bpb"] / rows["none"]["bpb"] - 1) < 0.01  # the bound: at most 1% worse


@pytest.mark.parametrize("args, expected", [
    (["--quantize=int4"], "error: command line: quantize='int4' is not one of 'none', 'int8'"),
    (["--quantize=int8", "--device=cuda"], ("error: quantize=int8: the int8 kernel (aten._weight_int8pack_mm) "
                                            "runs on the CPU only, not on device cuda; use dtype=bfloat16 or float16 there")),
    (["--quantize=int8", "--dtype=bfloat16"], ("error: quantize=int8 computes in float32 between its int8 matrix "
                                               "products, so dtype must be 'auto' or 'float32', not 'bfloat16'")),
])
def test_sample_and_serve_refuse_quantize_settings_in_one_line(trained, args, expected):
    for script in (sample_script, serve_script):
        result = run_main(script.main, [f"--init_from={trained[0]}", *args])
        assert result.returncode == 1
        assert result.stderr.strip() == expected


def test_inference_dtype():
    assert quantize.inference_dtype("auto", "int8", "cpu") == "float32"  # even where auto would pick bf16
    assert quantize.inference_dtype("float16", "none", "cuda") == "float16"
    assert quantize.inference_dtype("auto", "none", "mps") == "float32"
    with pytest.raises(ConfigError, match="not on device mps"):
        quantize.inference_dtype("auto", "int8", "mps")
    with pytest.raises(ConfigError, match="'none', 'int8'"):
        quantize.inference_dtype("auto", "8bit", "cpu")


@pytest.mark.parametrize("flags, bf16_speedup, dtype", [({"avx2", "fma"}, 9.0, "float32"),
                                                        ({"avx512f", "avx512_bf16"}, 0.57, "float32"),  # the Xeon
                                                        ({"avx512f", "avx512_bf16"}, 4.2, "bfloat16"),  # the EPYC
                                                        ({"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}, 0.5,
                                                         "bfloat16")])
def test_auto_dtype_on_the_cpu_is_bf16_only_where_its_products_are_faster(monkeypatch, flags, bf16_speedup, dtype):
    # AVX-512 BF16 without AMX is native bf16, faster than fp32 on some CPUs and slower on others: measured, not assumed;
    # without native bf16 the measurement is never consulted (emulated bf16 is always slower), with AMX neither
    monkeypatch.setattr(runtime, "cpu_flags", lambda: flags)
    monkeypatch.setattr(runtime, "bf16_matmul_speedup", lambda: bf16_speedup)
    assert runtime.pick_dtype("auto", "cpu") == dtype
    assert training.orthogonalize_dtype("cpu") == getattr(torch, dtype)
    assert runtime.cpu_supports_bf16() == ("avx512_bf16" in flags)
    assert runtime.cpu_bf16_kind().startswith(("AMX", "AVX-512 BF16 (no AMX), products faster")) == (dtype == "bfloat16")
    # decoding is matrix-vector products, where bf16 weights were slower on every CPU measured: fp32 unless asked
    assert quantize.inference_dtype("auto", "none", "cpu") == "float32"
    assert quantize.inference_dtype("bfloat16", "none", "cpu") == "bfloat16"
    assert runtime.pick_dtype("float32", "cpu") == "float32"


def test_bf16_matmul_speedup_is_measured_here():
    # the real timing the AVX-512-BF16-without-AMX rule rests on: a positive rate ratio, cached for the process
    speedup = runtime.bf16_matmul_speedup(n=64, rounds=1)
    assert speedup > 0 and runtime.bf16_matmul_speedup(n=64, rounds=1) == speedup
