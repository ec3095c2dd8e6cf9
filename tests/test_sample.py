"""sample.py and the model's decoding: prompts, stopping, sampling semantics, KV cache, seeds, output schema."""
import json

import pytest
import torch
from helpers import load_script, run_main, train_small_model

from regional_tinystories.checkpoint import load_model
from regional_tinystories.model import GPT, ModelConfig
from regional_tinystories.sampling import (
    SamplingConfig,
    banned_ngram_tokens,
    generate_stories,
    sample_next,
)

sample_script = load_script("training-inference/sample.py")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_small_model(tmp_path_factory.mktemp("sample"))[0]


def random_model(recipe="modern", block_size=64):
    torch.manual_seed(0)
    return GPT(ModelConfig(vocab_size=300, block_size=block_size, n_layer=2, n_head=2, n_embd=32, recipe=recipe)).eval()


def test_story_starts_with_prompt_and_respects_limit(run_dir):
    model, tok, _ = load_model(str(run_dir))
    prompts = ["एक दिन छोटी मीरा", "Tom had a"]
    records = list(generate_stories(model, tok, prompts, SamplingConfig(max_new_tokens=20, seed=1), num_samples=3))
    assert len(records) == 6
    for r in records:
        assert r["story"].startswith(r["prompt"])
        assert r["n_tokens"] <= 20 and (r["finish_reason"] == "eos" or r["n_tokens"] == 20)


def test_generation_stops_at_eos(run_dir):
    model, tok, _ = load_model(str(run_dir))

    def always_eos(module, inputs, logits):  # make <eos> the only sensible next token
        logits[..., tok.eos_id] = 1e4
        return logits
    handle = model.lm_head.register_forward_hook(always_eos)
    try:
        records = list(generate_stories(model, tok, ["Lily saw"], SamplingConfig(max_new_tokens=30), num_samples=2))
    finally:
        handle.remove()
    assert [(r["finish_reason"], r["n_tokens"], r["story"]) for r in records] == [("eos", 0, "Lily saw")] * 2


@pytest.mark.parametrize("recipe", ["classic", "modern"])
def test_greedy_is_identical_with_and_without_kv_cache(recipe):
    model = random_model(recipe)
    idx = torch.randint(0, 300, (3, 7))
    greedy = SamplingConfig(max_new_tokens=50, temperature=0)
    cached = model.generate(idx, greedy, use_cache=True)
    recomputed = model.generate(idx, greedy, use_cache=False)
    assert torch.equal(cached, recomputed)


@pytest.mark.parametrize("recipe", ["classic", "modern"])
def test_cache_keeps_decoding_past_the_block_size(recipe):
    """Past a full window the cache restarts from the last half-window: every token must be the greedy choice of a
    full recompute over exactly that window (positions counted from the window's start)."""
    block = 16
    model = random_model(recipe, block_size=block)
    idx = torch.randint(0, 300, (2, 5))
    out = model.generate(idx, SamplingConfig(max_new_tokens=40, temperature=0))
    expected, start = idx, 0
    with torch.no_grad():
        for _ in range(40):
            if expected.size(1) - start > block:
                start = expected.size(1) - block // 2
            logits, _ = model(expected[:, start:])
            expected = torch.cat([expected, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert start > 0  # the window really slid, more than once
    assert torch.equal(out, expected)


def test_top_k_1_and_tiny_top_p_equal_greedy():
    model = random_model()
    idx = torch.randint(0, 300, (2, 5))
    greedy = model.generate(idx, SamplingConfig(max_new_tokens=25, temperature=0))
    g = torch.Generator().manual_seed(3)
    assert torch.equal(model.generate(idx, SamplingConfig(max_new_tokens=25, temperature=1.5, top_k=1), generator=g), greedy)
    assert torch.equal(model.generate(idx, SamplingConfig(max_new_tokens=25, temperature=1.0, top_p=1e-6), generator=g),
                       greedy)


def test_sampling_distribution_follows_temperature_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(40_000, 1)
    idx = torch.zeros(40_000, 1, dtype=torch.long)
    g = torch.Generator().manual_seed(0)

    def freq(**kw):
        return torch.bincount(sample_next(logits.clone(), idx, SamplingConfig(**{"temperature": 1.0, **kw}), generator=g), minlength=4).float() / 40_000
    assert torch.allclose(freq(temperature=1.0), torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.01)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05]) ** 2  # temperature 0.5 squares the probabilities
    assert torch.allclose(freq(temperature=0.5), p / p.sum(), atol=0.01)
    assert torch.allclose(freq(top_k=2), torch.tensor([0.625, 0.375, 0, 0]), atol=0.01)
    # top_p=0.7: 0.5 alone does not reach 0.7, 0.5+0.3 does, so exactly the first two tokens remain
    assert torch.allclose(freq(top_p=0.7), torch.tensor([0.625, 0.375, 0, 0]), atol=0.01)


def test_repetition_controls():
    assert sorted(banned_ngram_tokens([1, 2, 3, 1, 2], 3)) == [3]
    assert banned_ngram_tokens([1, 2, 3], 3) == []
    logits = torch.tensor([[2.0, 1.0, -1.0]])
    penalised = sample_next(logits.clone(), torch.tensor([[0, 2]]), SamplingConfig(temperature=0, repetition_penalty=4.0))
    assert penalised.item() == 1  # 2.0 / 4 < 1.0
    model = random_model()
    out = model.generate(torch.randint(0, 300, (2, 3)), SamplingConfig(max_new_tokens=40, temperature=0, no_repeat_ngram_size=2))
    for row in out.tolist():
        bigrams = list(zip(row, row[1:]))
        assert len(bigrams) == len(set(bigrams))


def test_seeded_runs_are_reproducible(run_dir):
    model, tok, _ = load_model(str(run_dir))
    def stories(seed):
        return list(generate_stories(model, tok, ["Tom"], SamplingConfig(max_new_tokens=15, temperature=1.0, top_p=0.9,
                                                                          seed=seed), num_samples=3))
    a, b, c = stories(5), stories(5), stories(6)
    assert [r["story"] for r in a] == [r["story"] for r in b]
    assert [r["story"] for r in a] != [r["story"] for r in c]


def test_cli_json_output_schema_from_prompt_file(run_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("एक दिन\n\nTom had a\n", encoding="utf-8")
    out = tmp_path / "s.json"
    result = run_main(sample_script.main, [f"--init_from={run_dir}", f"--start=FILE:{prompts}", "--num_samples=2",
                                           "--max_new_tokens=10", "--output_format=json", f"--out_file={out}"])
    assert result.returncode == 0, result.stderr
    records = json.loads(out.read_text(encoding="utf-8"))
    assert len(records) == 4
    assert set(records[0]) == {"ID", "prompt", "sample_index", "story", "n_tokens", "finish_reason", "settings", "model"}
    assert [(r["ID"], r["sample_index"]) for r in records] == [("prompt-0001", 0), ("prompt-0001", 1),
                                                              ("prompt-0002", 0), ("prompt-0002", 1)]
    assert records[0]["settings"]["max_new_tokens"] == 10 and records[0]["model"].endswith("ckpt_best.pt")


def test_cli_errors_are_one_line(run_dir, tmp_path):
    for args, expected in [([f"--init_from={tmp_path}/none"], "not found"),
                           ([f"--init_from={run_dir}", f"--start=FILE:{tmp_path}/p.txt"], "prompt file"),
                           ([f"--init_from={run_dir}", "--temprature=0.5"], "unknown config key 'temprature'")]:
        result = run_main(sample_script.main, args)
        assert result.returncode == 1 and expected in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
