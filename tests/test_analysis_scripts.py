"""The analysis scripts end to end on tiny data made here: a Hindi corpus, a dataset prepared from it by prepare.py,
and small untrained checkpoints that use its tokenizer. Expected numbers are worked out by hand where the input
allows it."""
import csv
import importlib.util
import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import load_script

from regional_tinystories import PROJECT_ROOT, attention, metrics
from regional_tinystories import tokenizer as tk
from regional_tinystories.model import GPT, ModelConfig

attention_heatmap = load_script("scripts/attention_heatmap.py")
compare_tokenizers = load_script("scripts/compare_tokenizers.py")
eval_bpb = load_script("scripts/eval_bpb.py")
results_table = load_script("scripts/results_table.py")
run_prompt_suites = load_script("scripts/run_prompt_suites.py")
story_metrics = load_script("scripts/story_metrics.py")

NAMES = ["राजू", "सीमा", "मीरा", "आरव", "अनु"]
THINGS = ["गेंद", "पतंग", "किताब", "गुड़िया"]
COLORS = ["लाल", "नीली", "पीली", "हरी"]
STORIES = [f"{n} के पास एक {c} {t} थी। {n} ने {t} से खेला और बहुत खुश हुआ। शाम को {n} घर लौटा।"
           for n, t, c in itertools.product(NAMES, THINGS, COLORS)][:40]
MORPH_CSV = "word,stem,suffix\nलड़कों,लड़क,ों\nखेलना,खेल,ना\nकिताबें,किताब,ें\n"


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return str(path)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def exit_message(main, argv):
    """The message a script exits with (and asserts it exits)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return str(exc.value.code)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "hindi.jsonl", [{"story": s} for s in STORIES])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, corpus):
    """A dataset prepared by the project's own prepare.py (byte-level BPE, 300 tokens)."""
    spec = importlib.util.spec_from_file_location("prepare", os.path.join(PROJECT_ROOT, "training-inference", "data",
                                                                          "prepare.py"))
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    root = tmp_path_factory.mktemp("data")
    prepare.main(["--input", corpus, "--name", "tiny-hindi", "--out_dir", str(root), "--tokenizer", "bpe:300",
                  "--workers", "1", "--val_fraction", "0.25"])
    return str(root / "tiny-hindi")


def save_run(folder, data_dir, seed, **model_args):
    """An untrained checkpoint in train.py's format, using the dataset's tokenizer."""
    meta = read_json(os.path.join(data_dir, "meta.json"))
    torch.manual_seed(seed)
    args = dict(vocab_size=meta["vocab_size"], block_size=32, n_layer=2, n_head=2, n_embd=16) | model_args
    model = GPT(ModelConfig(**args))
    os.makedirs(folder, exist_ok=True)
    torch.save({"model_args": model.model_args(), "model": model.state_dict(), "iter_num": 0, "tokens_seen": 0,
                "val_loss": 5.0, "val_bpb": 1.5, "dataset": "tiny-hindi", "meta": meta,
                "config": {"dataset": "tiny-hindi", "data_root": os.path.dirname(data_dir)},
                "tokenizer": tk.export(tk.load_tokenizer(meta["tokenizer"], data_dir))},
               os.path.join(folder, "ckpt_best.pt"))
    return str(folder)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, dataset):
    root = tmp_path_factory.mktemp("runs")
    return [save_run(root / "tiny-hindi-a", dataset, 1, qk_norm=True),
            save_run(root / "tiny-hindi-b", dataset, 2, recipe="classic")]


# ----------------------------------------------------------------------------- compare_tokenizers.py

def test_compare_tokenizers_writes_markdown_csv_and_png(tmp_path, corpus):
    (tmp_path / "morph").mkdir()
    (tmp_path / "morph" / "hindi.csv").write_text(MORPH_CSV, encoding="utf-8")
    out = tmp_path / "out"
    compare_tokenizers.main(["--corpus", corpus, "--tokenizers", "sp:300,sp-unigram:300,bpe:300",
                             "--morph_dir", str(tmp_path / "morph"), "--out_dir", str(out)])
    with open(out / "tokenizers.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["tokenizer"] for r in rows] == ["sp-bpe:300", "sp-unigram:300", "bpe:300"]
    for r in rows:
        assert r["language"] == "hindi" and r["n_words"] == "3"
        assert float(r["fertility"]) == pytest.approx(int(r["tokens"]) / int(r["words"]))
        assert 0 < float(r["renyi_2.5_norm"]) <= float(r["renyi_1_norm"]) <= float(r["renyi_0.5_norm"]) <= 1
        assert 0 <= float(r["split_share"]) <= 1 and int(r["vocab_used"]) <= int(r["vocab_size"])
    md = (out / "tokenizers.md").read_text(encoding="utf-8")
    assert "## MorphScore" in md and "| hindi | hindi | `bpe:300` |" in md
    assert (out / "tokenizers.png").stat().st_size > 10_000
    assert (out / "tokenizers" / "hindi-hindi-sp-bpe-300" / "tokenizer.model").is_file()


def test_compare_tokenizers_reads_a_prepared_dataset(tmp_path, dataset):
    compare_tokenizers.main(["--data_dir", dataset, "--morph_dir", str(tmp_path), "--out_dir", str(tmp_path)])
    with open(tmp_path / "tokenizers.csv", encoding="utf-8") as f:
        (row,) = list(csv.DictReader(f))
    val = read_json(os.path.join(dataset, "meta.json"))["splits"]["val"]
    assert row["tokenizer"] == "bpe:300" and row["language"] == "hindi"
    assert int(row["tokens"]) == val["tokens"] - 2 * val["documents"]  # the .bin minus each document's bos and eos
    assert int(row["bytes"]) == val["bytes"]


def test_compare_tokenizers_bad_input_is_one_error_line(tmp_path, corpus):
    assert exit_message(compare_tokenizers.main, ["--corpus", corpus, "--tokenizers", "sp:300,foo:3"]) \
        .startswith("error: tokenizer 'foo:3': unknown kind")
    missing = str(tmp_path / "hindi.jsonl")
    assert exit_message(compare_tokenizers.main, ["--corpus", missing]) == f"error: {missing}: no such file or folder"
    assert "write LANGUAGE=" in exit_message(compare_tokenizers.main, ["--corpus", str(tmp_path / "stories.jsonl")])


# ----------------------------------------------------------------------------- story_metrics.py

SAMPLES = [
    {"ID": "p1", "prompt": "एक दिन", "sample_index": 0, "story": "एक दिन राम ने आम खाया।", "n_tokens": 5,
     "finish_reason": "eos", "model": "out/a/ckpt_best.pt"},
    {"ID": "p1", "prompt": "एक दिन", "sample_index": 1, "story": "एक दिन राम ने abc खाया", "n_tokens": 7,
     "finish_reason": "length", "model": "out/a/ckpt_best.pt"},
]


def test_story_metrics_by_hand(tmp_path):
    samples = write_jsonl(tmp_path / "samples.jsonl", SAMPLES)
    corpus_like = write_jsonl(tmp_path / "reference.jsonl", [{"story": "राम घर गया।"}, {"story": "सीमा घर गई।"}])
    (tmp_path / "words.txt").write_text("राम\nआम\nखाया\n", encoding="utf-8")
    story_metrics.main(["--samples", samples, corpus_like, "--language", "hindi",
                        "--dictionary", str(tmp_path / "words.txt"), "--out_dir", str(tmp_path / "out")])
    a, reference = read_json(tmp_path / "out" / "story_metrics.json")
    # completions (prompt removed): "राम ने आम खाया।" and "राम ने abc खाया"
    assert a["model"] == "out/a/ckpt_best.pt" and a["stories"] == 2
    assert a["distinct_1"] == pytest.approx(5 / 8)  # राम ने आम खाया राम ने abc खाया
    assert a["distinct_2"] == pytest.approx(5 / 6)  # "राम ने" twice among six bigrams
    assert a["max_rouge2_mean"] == pytest.approx(1 / 3)  # one shared bigram of three each: P = R = F = 1/3
    assert a["script_purity"] == pytest.approx((1 + 9 / 12) / 2)  # 3 Latin of 12 letters in the second
    assert a["mean_words"] == 4 and a["mean_tokens"] == 6 and a["eos_share"] == 0.5
    assert a["lexicon_hit_rate"] == pytest.approx(5 / 8)  # ने and abc are not in the word list
    assert reference["model"] == "reference" and reference["eos_share"] is None and reference["mean_tokens"] is None
    assert reference["max_rouge2_mean"] == 0.0  # no bigram in common
    md = (tmp_path / "out" / "story_metrics.md").read_text(encoding="utf-8")
    assert "| `out/a/ckpt_best.pt` | 2 | 0.625 | 0.833 |" in md
    assert (tmp_path / "out" / "max_rouge2.png").is_file()


def test_story_metrics_leaves_empty_stories_out_of_script_purity(tmp_path):
    samples = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "एक दिन", "story": "एक दिन", "model": "m"},
                                                  {"prompt": "एक दिन", "story": "एक दिन राजा आया।", "model": "m"}])
    (tmp_path / "words.txt").write_text("राजा\n", encoding="utf-8")
    story_metrics.main(["--samples", samples, "--language", "hindi", "--dictionary", str(tmp_path / "words.txt"),
                        "--out_dir", str(tmp_path)])
    (row,) = read_json(tmp_path / "story_metrics.json")
    assert row["script_purity"] == 1.0 and row["mean_words"] == 1.0  # the empty completion has no letters
    assert row["lexicon_hit_rate"] == 0.5  # राजा known, आया not


def test_story_metrics_without_the_dictionary_warns_and_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(metrics.DEFAULT_DICTIONARIES, "hindi", (str(tmp_path / "hi_IN.dic"), "hunspell-hi"))
    story_metrics.main(["--samples", write_jsonl(tmp_path / "s.jsonl", SAMPLES), "--language", "hindi",
                        "--out_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert f"warning: dictionary {tmp_path / 'hi_IN.dic'}: not found" in err and "apt-get install hunspell-hi" in err
    (row,) = read_json(tmp_path / "story_metrics.json")
    assert row["lexicon_hit_rate"] is None


def test_story_metrics_bad_input_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(SAMPLES[0], ensure_ascii=False) + "\n{not json\n", encoding="utf-8")
    assert exit_message(story_metrics.main, ["--samples", str(bad), "--language", "hindi"]) \
        .startswith(f"error: {bad}:2: not valid JSON")
    no_story = write_jsonl(tmp_path / "no_story.jsonl", [{"ID": "x"}])
    assert exit_message(story_metrics.main, ["--samples", no_story, "--language", "hindi"]) \
        == f"error: {no_story}:1: record has no 'story' text"
    good = write_jsonl(tmp_path / "good.jsonl", SAMPLES)
    assert exit_message(story_metrics.main, ["--samples", good, "--language", "klingon"]) \
        .startswith("error: unknown language 'klingon'")
    assert exit_message(story_metrics.main, ["--samples", good, "--language", "hindi", "--dictionary",
                                             str(tmp_path / "none.dic")]).startswith("error: dictionary")


def test_memorisation_scores_a_perfect_reciter_1(tmp_path, monkeypatch, corpus, runs):
    """With generation replaced by the true continuation, every completion's ROUGE-2 precision is 1."""
    def recite(model, tok, prompts, sampling, model_name="", **settings):
        full = {metrics.split_at_word_fraction(s, 0.4)[0]: s for s in STORIES}
        return [{"prompt": p, "story": full[p], "model": model_name} for p in prompts]
    monkeypatch.setattr(story_metrics, "generate_stories", recite)
    story_metrics.main(["--samples", write_jsonl(tmp_path / "s.jsonl", SAMPLES), "--language", "hindi",
                        "--init_from", runs[0], "--corpus", corpus, "--memorisation_stories", "5",
                        "--out_dir", str(tmp_path / "out")])
    rows = read_json(tmp_path / "out" / "story_metrics.json")
    (row,) = [r for r in rows if r["model"].endswith(os.path.join("tiny-hindi-a", "ckpt_best.pt"))]
    assert row["memorisation_rouge2_precision"] == 1.0 and row["memorisation_stories"] == 5
    assert row["memorisation_chrf"] == pytest.approx(100) and row["memorisation_bleu"] == pytest.approx(100)
    assert row["stories"] == 0  # no samples of this checkpoint were given
    assert (tmp_path / "out" / "memorisation.png").is_file()


def test_memorisation_with_a_real_model(tmp_path, monkeypatch, corpus, runs):
    """The reported precision is the mean ROUGE-2 precision of what the real model wrote after each 40% prompt,
    against that story's true remaining 60%."""
    generated = []

    def spy(*args, **kwargs):
        records = list(real_generate(*args, **kwargs))
        generated.extend(records)
        return records
    real_generate = story_metrics.generate_stories
    monkeypatch.setattr(story_metrics, "generate_stories", spy)
    story_metrics.main(["--samples", write_jsonl(tmp_path / "s.jsonl", SAMPLES), "--language", "hindi",
                        "--init_from", runs[1], "--corpus", corpus, "--memorisation_stories", "3",
                        "--max_new_tokens", "6", "--out_dir", str(tmp_path)])
    row = read_json(tmp_path / "story_metrics.json")[-1]
    assert row["memorisation_stories"] == 3 and len(generated) == 3
    endings = {metrics.split_at_word_fraction(s, 0.4)[0]: metrics.split_at_word_fraction(s, 0.4)[1] for s in STORIES}
    expected = np.mean([metrics.rouge2(endings[r["prompt"]], metrics.completion_of(r)).precision for r in generated])
    assert all(r["n_tokens"] > 0 for r in generated)
    assert row["memorisation_rouge2_precision"] == pytest.approx(expected)


# ----------------------------------------------------------------------------- eval_bpb.py

def test_eval_bpb_matches_a_window_by_window_computation(tmp_path, dataset, runs):
    eval_bpb.main(["--init_from", runs[0], "--batch_size", "3", "--out_dir", str(tmp_path)])
    (row,) = read_json(tmp_path / "eval_bpb.json")
    meta = read_json(os.path.join(dataset, "meta.json"))
    tokens = torch.from_numpy(np.fromfile(os.path.join(dataset, "val.bin"), dtype=meta["dtype"]).astype(np.int64))
    model = GPT(ModelConfig(**torch.load(os.path.join(runs[0], "ckpt_best.pt"))["model_args"]))
    model.load_state_dict(torch.load(os.path.join(runs[0], "ckpt_best.pt"))["model"])
    model.eval()
    nats = 0.0
    with torch.no_grad():
        for start in range(0, len(tokens) - 1, 32):  # one window at a time, every target once
            window = tokens[start:start + 33]
            logits, _ = model(window[None, :-1], window[None, 1:])
            nats += F.cross_entropy(logits[0], window[1:], reduction="sum").item()
    assert row["tokens"] == len(tokens) - 1 and row["bytes"] == meta["splits"]["val"]["bytes"]
    assert row["bpb"] == pytest.approx(nats / math.log(2) / meta["splits"]["val"]["bytes"], rel=1e-5)
    assert "Loss per token is not comparable across tokenizers" in (tmp_path / "eval_bpb.md").read_text()


def test_eval_bpb_refuses_a_dataset_with_another_tokenizer(tmp_path, corpus, runs):
    other = tmp_path / "other"
    os.makedirs(other)
    meta = {"tokenizer": {"kind": "tiktoken", "name": "gpt2"}, "tokenizer_name": "tiktoken:gpt2",
            "dtype": "uint16", "bos_id": 0, "eos_id": 0, "vocab_size": 10, "splits": {"val": {"tokens": 2}}}
    (other / "meta.json").write_text(json.dumps(meta))
    np.array([0, 0], dtype=np.uint16).tofile(other / "val.bin")
    message = exit_message(eval_bpb.main, [runs[0], "--data_dir", str(other)])
    assert message.startswith("error: ") and "tiktoken:gpt2" in message
    assert exit_message(eval_bpb.main, [str(tmp_path / "nothing")]).startswith("error: checkpoint")


# ----------------------------------------------------------------------------- attention_heatmap.py

@pytest.mark.parametrize("model_args", [dict(recipe="modern", qk_norm=True), dict(recipe="classic")])
def test_attention_weights_reproduce_the_layer_output(model_args):
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32, **model_args)).eval()
    idx = torch.randint(50, (1, 12))
    attn = model.blocks[1].attn
    seen = {}
    hooks = [attn.register_forward_pre_hook(lambda m, args: seen.update(x=args[0])),
             attn.register_forward_hook(lambda m, args, out: seen.update(out=out))]
    with torch.no_grad():
        model(idx)
    for h in hooks:
        h.remove()
    weights = attention.attention_weights(model, idx)[1]
    for w in weights:
        assert torch.allclose(w.sum(-1), torch.ones(12)) and torch.all(torch.triu(w, 1) == 0)
    # the weights times the values, through the output projection, must give what the layer computed
    C = 32
    v = attn.c_attn(seen["x"]).split(C, dim=2)[2].view(1, 12, 4, C // 4).transpose(1, 2)
    y = torch.stack([weights[h] @ v[0, h] for h in range(4)]).transpose(0, 1).reshape(1, 12, C)
    assert torch.allclose(attn.c_proj(y), seen["out"], atol=1e-5)


def test_attention_heatmap_script(tmp_path, runs, capsys):
    png = tmp_path / "attention.png"
    attention_heatmap.main(["--init_from", runs[0], "--prompt", "राजू के पास एक लाल गेंद", "--layer", "-1",
                            "--head", "1", "--out", str(png)])
    assert png.stat().st_size > 10_000
    lines = capsys.readouterr().out.splitlines()
    assert "'<bos>' attends most to   0 '<bos>' (1.00)" in lines[0]  # the first token can only attend to itself
    assert exit_message(attention_heatmap.main, ["--init_from", runs[0], "--prompt", "x", "--head", "9"]) \
        .startswith("error: --head 9:")


# ----------------------------------------------------------------------------- results_table.py

def write_run(folder, dataset_name, params, val_bpb, tokenizer="sp-bpe:4096"):
    os.makedirs(folder)
    summary = {"dataset": dataset_name, "out_dir": str(folder), "iters": 100, "tokens": 12800, "params": params,
               "params_non_embedding": params // 2, "n_layer": 2, "n_embd": 64, "n_head": 2, "recipe": "modern",
               "vocab_size": 4096, "tokenizer": tokenizer, "learning_rate": 1e-3, "warmup_iters": 10,
               "final_val_loss": 3.0, "final_val_bpb": val_bpb, "best_val_loss": 2.9, "best_val_bpb": val_bpb,
               "seconds": 1.0, "stop_reason": "max_iters"}
    (folder / "summary.json").write_text(json.dumps(summary))
    write_jsonl(folder / "log.jsonl", [{"type": "train", "iter": 10, "tokens": 1280, "loss": 4.0},
                                       {"type": "eval", "iter": 100, "tokens": 12800, "val_loss": 2.9}])


def test_results_table_collects_runs_ratings_and_metrics(tmp_path, runs):
    write_run(tmp_path / "runs" / "hindi-a", "demo-hindi", 1_500_000, 1.25)
    write_run(tmp_path / "runs" / "hindi-b", "demo-hindi", 3_000_000, 1.10, tokenizer="bpe:4096")
    write_run(tmp_path / "runs" / "english-a", "demo-english", 1_500_000, 0.95)
    ratings = [{"ID": f"p{i}", "model": "out/runs/hindi-a/ckpt_best.pt", "judge": "j",
                **{field: score for field in results_table.SCORE_FIELDS}} for i, score in enumerate([6, 7, 8])]
    (tmp_path / "ratings").mkdir()
    write_jsonl(tmp_path / "ratings" / "hindi.jsonl", ratings)
    write_jsonl(tmp_path / "ratings" / "hindi.failed.jsonl", [{"ID": "p9", "error": "timeout"}])  # skipped
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "story_metrics.json").write_text(json.dumps(
        [{"model": "elsewhere/hindi-a/ckpt_best.pt", "distinct_2": 0.5, "lexicon_hit_rate": 0.8}]))
    (tmp_path / "metrics" / "eval_bpb.json").write_text(json.dumps([{"model": "hindi-b/ckpt_best.pt", "bpb": 1.2345}]))
    out = tmp_path / "out"
    results_table.main(["--runs", str(tmp_path / "runs"), runs[0], "--ratings", str(tmp_path / "ratings"),
                        "--metrics", str(tmp_path / "metrics"), "--out_dir", str(out)])
    md = (out / "results.md").read_text(encoding="utf-8")
    sections = {part.split("\n")[0]: part for part in md.split("\n## ")[1:]}
    hindi, english = sections["hindi"], sections["english"]
    # three ratings 6, 7, 8: mean 7, half-width t(0.975, 2) * 1 / sqrt(3) = 4.302653 / 1.732051 = 2.48
    assert "| `hindi-a` | modern | 64 | 2 | 2 | 1.50 | `sp-bpe:4096` | 12,800 | 2.900 | 1.2500 |" in hindi
    assert "7.00 ± 2.48" in hindi and "| 0.500 |" in hindi and "80.0" in hindi and "1.2345" in hindi
    assert "compare them by bits per byte" in hindi  # hindi-b uses another tokenizer
    assert "`tiny-hindi-a`" in hindi  # a run with only a checkpoint: facts read from it
    tiny_params = GPT(ModelConfig(**torch.load(os.path.join(runs[0], "ckpt_best.pt"))["model_args"])).num_params()
    with open(out / "results.csv", encoding="utf-8") as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    assert int(rows["tiny-hindi-a"]["params"]) == tiny_params and rows["english-a"]["language"] == "english"
    assert "overall" not in english.splitlines()[2]  # no ratings for English: the judge columns are left out
    for png in ("score_vs_params.png", "loss_hindi.png", "loss_english.png"):
        assert (out / png).stat().st_size > 10_000


def test_results_table_bad_input_is_one_error_line(tmp_path):
    assert exit_message(results_table.main, ["--runs", str(tmp_path / "none")]) \
        == f"error: {tmp_path / 'none'}: no such run folder"
    write_run(tmp_path / "runs" / "hindi-a", "demo-hindi", 1000, 1.0)
    bad = write_jsonl(tmp_path / "r.jsonl",
                      [{"ID": "p", "model": "x/hindi-a/ckpt_best.pt", "context_awareness": "high"}])
    assert exit_message(results_table.main, ["--runs", str(tmp_path / "runs"), "--ratings", bad]) \
        == f"error: {bad}:1: context_awareness is 'high', not a score from 1 to 10"


# ----------------------------------------------------------------------------- run_prompt_suites.py

def test_run_prompt_suites_side_by_side(tmp_path, runs):
    suite = write_jsonl(tmp_path / "hindi.jsonl", [
        {"ID": "hi-context-01", "suite": "context", "prompt": "सीमा के पास एक नीली", "expected": "पतंग"},
        {"ID": "hi-context-02", "suite": "context", "prompt": "राजू ने | गेंद", "expected": "से"},
        {"ID": "hi-factual-01", "suite": "factual", "prompt": "आसमान का रंग", "expected": "नीला"}])
    run_prompt_suites.main(["--suites", suite, "--checkpoints", *runs, "--max_new_tokens", "4",
                            "--out_dir", str(tmp_path / "out")])
    md = (tmp_path / "out" / "hindi.md").read_text(encoding="utf-8")
    assert "| suite | prompts | `tiny-hindi-a` hits | `tiny-hindi-b` hits |" in md
    assert "## context" in md and "## factual" in md and "राजू ने \\| गेंद" in md  # '|' escaped inside a cell
    records = [json.loads(line) for line in open(tmp_path / "out" / "hindi.jsonl", encoding="utf-8")]
    assert len(records) == 6 and {r["ID"] for r in records} == {"hi-context-01", "hi-context-02", "hi-factual-01"}
    assert all(isinstance(r["completion"], str) and isinstance(r["hit"], bool) for r in records)


def test_prompt_suite_hits_and_errors(tmp_path, runs):
    assert run_prompt_suites.is_hit("पतंग उड़ाने गई।", "पतंग", 5)
    assert run_prompt_suites.is_hit("Some ice cream, please", "ice cream", 5)
    assert not run_prompt_suites.is_hit("a b c d e kite", "kite", 5)
    assert not run_prompt_suites.is_hit("the kites flew", "kite", 5)  # whole words only
    bad = write_jsonl(tmp_path / "s.jsonl", [{"ID": "a", "suite": "context", "prompt": "x"}])
    assert exit_message(run_prompt_suites.main, ["--suites", bad, "--init_from", runs[0]]) \
        == f"error: {bad}:1: prompt record has no text in 'expected'"


# ----------------------------------------------------------------------------- the command line

def test_command_line_error_is_one_line_without_traceback(tmp_path):
    script = os.path.join(PROJECT_ROOT, "scripts", "story_metrics.py")
    result = subprocess.run([sys.executable, script, "--samples", str(tmp_path / "missing.jsonl"),
                             "--language", "hindi"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {tmp_path / 'missing.jsonl'}: no such file or folder"


def test_old_checkpoint_spellings_still_work_with_a_note(tmp_path, runs, capsys):
    eval_bpb.main([runs[0], "--out_dir", str(tmp_path / "a")])  # positional, as before
    assert "note: checkpoints as positional arguments are deprecated, use --init_from" in capsys.readouterr().err
    assert read_json(tmp_path / "a" / "eval_bpb.json")[0]["model"].endswith("ckpt_best.pt")
