"""TinyStories-Instruct: prepare.py --format=instruct on real demo records (rendering, the story mask, token for
token what sampling feeds the model), train.py loss_on=story, and the spec in sample.py and serve.py (refused for a
model trained on plain stories)."""
import gzip
import itertools
import json
import os

import numpy as np
import pytest
import torch
from helpers import PREPARE, ROOT, load_script, run, run_main, write_jsonl

from regional_tinystories import instruct
from regional_tinystories import tokenizer as tk
from regional_tinystories.dataset import load_meta
from regional_tinystories.sampling import encode_prompt
from regional_tinystories.training import BatchSampler

train_script = load_script("training-inference/train.py")
sample_script = load_script("training-inference/sample.py")
serve = load_script("training-inference/serve.py")

TINY = ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=64", "--batch_size=8", "--eval_iters=2",
        "--log_interval=1", "--warmup_iters=2", "--max_iters=4", "--eval_interval=2"]


def demo_records(language, n):
    with gzip.open(os.path.join(ROOT, "data", "demo", f"{language}.jsonl.gz"), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in itertools.islice(f, n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_jsonl(str(tmp_path_factory.mktemp("instruct") / "corpus.jsonl"),
                       demo_records("hindi", 40) + demo_records("english", 40))


def prepare(corpus, root, name, *extra):
    run(PREPARE, f"--input={corpus}", f"--name={name}", f"--out_dir={root}", "--tokenizer=sp-bpe:600",
        "--val_fraction=0.2", "--workers=1", *extra)
    return os.path.join(root, name)


@pytest.fixture(scope="module")
def datasets(corpus, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data"))
    instruct_dir = prepare(corpus, root, "instruct", "--format=instruct")
    plain_dir = prepare(corpus, root, "plain", f"--tokenizer=from:{instruct_dir}")
    return root, instruct_dir, plain_dir


def documents(data_dir, split):
    """[(tokens, mask)] of every document of a split."""
    meta = load_meta(data_dir)
    data = np.fromfile(os.path.join(data_dir, f"{split}.bin"), dtype=meta["dtype"])
    mask = np.fromfile(os.path.join(data_dir, f"{split}.mask.bin"), dtype=np.uint8)
    starts = [*np.flatnonzero(data == meta["bos_id"]), len(data)]
    return [(data[a:b].tolist(), mask[a:b].tolist()) for a, b in zip(starts, starts[1:])]


def test_instruct_blocks_are_rendered_per_language_and_the_mask_covers_exactly_the_story(corpus, datasets):
    _, instruct_dir, _ = datasets
    meta = load_meta(instruct_dir)
    tok = tk.load_dataset_tokenizer(meta, instruct_dir)
    fmt = instruct.InstructFormat.from_meta(meta["instruct"])
    assert meta["format"] == "instruct" and sorted(fmt.labels) == ["english", "hindi"]
    assert fmt.labels["hindi"]["words"] == "शब्द" and fmt.labels["english"]["story"] == "Story"
    by_story = {json.loads(line)["story"]: json.loads(line) for line in open(corpus, encoding="utf-8")}
    seen = 0
    for split in ("train", "val"):
        docs = documents(instruct_dir, split)
        assert meta["splits"][split]["story_tokens"] == sum(sum(mask) for _, mask in docs)
        for ids, mask in docs:
            given = mask.index(1)
            assert mask == [0] * given + [1] * (len(ids) - given)  # block first, then only story
            story = tok.decode(ids[given:-1])
            record = by_story[story]
            labels = fmt.labels[record["language"]]
            block = tok.decode(ids[1:given])
            assert block.endswith(f"\n{labels['story']}:\n")  # the story starts on a line of its own
            lines = block.split("\n")
            assert lines[0] == f"{labels['words']}: {record['noun']}, {record['verb']}, {record['adjective']}"
            ending_line = [line for line in lines if line.startswith(labels["ending"] + ":")]
            if record["language"] == "hindi" and ending_line:  # shown in the story's language, not the gloss
                assert ending_line[0] == f"अंत: {instruct.native_endings('hindi')[record['ending']]}"
            sentence = [line for line in lines if line.startswith(labels["sentence"] + ":")]
            if sentence:
                assert sentence[0].split(": ", 1)[1] in story
            # what sample.py feeds an instruct model is token for token what it was trained on
            assert encode_prompt(tok, "", 10_000, block) == ids[:given]
            seen += 1
    assert seen == 80


def test_the_plain_and_instruct_datasets_of_a_corpus_hold_out_the_same_stories(datasets):
    _, instruct_dir, plain_dir = datasets
    tok = tk.load_dataset_tokenizer(load_meta(plain_dir), plain_dir)
    plain_val = np.fromfile(os.path.join(plain_dir, "val.bin"), dtype=load_meta(plain_dir)["dtype"]).tolist()
    instruct_val = [ids[mask.index(1):] for ids, mask in documents(instruct_dir, "val")]
    assert tok.decode(plain_val) == tok.decode([t for ids in instruct_val for t in ids])


def test_field_shares_choose_what_the_blocks_show(corpus, tmp_path):
    words_only = prepare(corpus, str(tmp_path), "words", "--format=instruct", "--language=english",
                         "--instruct_shares=words:1,ending:0,features:0,sentence:0,summary:0")
    tok = tk.load_dataset_tokenizer(load_meta(words_only), words_only)
    blocks = [tok.decode(ids[1:mask.index(1)]) for ids, mask in documents(words_only, "train")]
    assert all(b.startswith("Words: ") and b.endswith("\nStory:\n") and b.count("\n") == 2 for b in blocks)
    with_sentence = prepare(corpus, str(tmp_path), "sentence", "--format=instruct", "--instruct_order=sentence,words",
                            "--instruct_shares=sentence:1,words:0")
    tok = tk.load_dataset_tokenizer(load_meta(with_sentence), with_sentence)
    for ids, mask in documents(with_sentence, "train"):
        block, story = tok.decode(ids[1:mask.index(1)]), tok.decode(ids[mask.index(1):-1])
        label, sentence = block.split("\n")[0].split(": ", 1)
        assert label in ("वाक्य", "Sentence") and sentence in story
    bad = run(PREPARE, f"--input={corpus}", f"--out_dir={tmp_path}", "--format=instruct",
              "--instruct_shares=words:2", check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith(
        "--instruct_shares: 'words:2' is not FIELD:SHARE with a field among words, ending, features, sentence, "
        "summary and a share in [0, 1]")
    text = tmp_path / "stories.txt"
    text.write_text("One story.\n\nAnother story.\n", encoding="utf-8")
    bad = run(PREPARE, f"--input={text}", f"--out_dir={tmp_path}", "--format=instruct", check=False)
    assert bad.returncode == 1 and bad.stderr.strip() == (
        f"error: {text}: a .txt file holds only text; this format needs JSON/JSONL records with their fields "
        f"(noun, verb, adjective, ending, ...)")


def test_loss_on_story_ignores_exactly_the_instruction_tokens(datasets):
    root, instruct_dir, plain_dir = datasets
    meta = load_meta(instruct_dir)
    sampler = BatchSampler(instruct_dir, meta, "train", 64, 8, seed=0, story_only=True)
    full = BatchSampler(instruct_dir, meta, "train", 64, 8, seed=0)
    x, y = sampler.next_batch()
    x_full, y_full = full.next_batch()
    assert torch.equal(x, x_full)  # the inputs keep the block: only the targets are masked
    mask = np.fromfile(os.path.join(instruct_dir, "train.mask.bin"), dtype=np.uint8)
    data = np.fromfile(os.path.join(instruct_dir, "train.bin"), dtype=meta["dtype"])
    for row_x, row_y, row_full in zip(x.tolist(), y.tolist(), y_full.tolist()):
        start = next(i for i in range(len(data)) if data[i:i + 64].tolist() == row_x)
        expected = [t if m else -1 for t, m in zip(row_full, mask[start + 1:start + 65])]
        assert row_y == expected
    assert (y == -1).any() and (y != -1).any()
    with pytest.raises(Exception, match="loss_on=story needs a dataset prepared with --format=instruct"):
        BatchSampler(plain_dir, load_meta(plain_dir), "train", 64, 8, seed=0, story_only=True)


@pytest.fixture(scope="module")
def models(datasets, tmp_path_factory):
    root = datasets[0]
    out = tmp_path_factory.mktemp("runs")
    runs = {}
    for name, dataset, extra in (("instruct", "instruct", ["--loss_on=story"]), ("plain", "plain", [])):
        runs[name] = str(out / name)
        result = run_main(train_script.main, [*TINY, f"--data_root={root}", f"--dataset={dataset}",
                                              f"--out_dir={runs[name]}", *extra])
        assert result.returncode == 0, result.stderr
    return runs


def test_loss_on_story_reports_bits_per_story_byte(datasets, models):
    _, instruct_dir, _ = datasets
    meta = load_meta(instruct_dir)
    log = [json.loads(line) for line in open(os.path.join(models["instruct"], "log.jsonl"), encoding="utf-8")]
    last = [r for r in log if r.get("type") == "eval"][-1]
    counts = meta["splits"]["val"]
    assert last["val_bpb"] == pytest.approx(last["val_loss"] / np.log(2) * counts["story_tokens"] / counts["story_bytes"])
    result = run_main(train_script.main, [*TINY, f"--data_root={datasets[0]}", "--dataset=plain", "--loss_on=story",
                                          f"--out_dir={models['plain']}-story"])
    assert result.returncode == 1 and "loss_on=story needs a dataset prepared with --format=instruct" in result.stderr


def test_sample_writes_to_a_spec_and_a_plain_model_refuses_one(models, tmp_path):
    out = tmp_path / "samples.jsonl"
    result = run_main(sample_script.main, [f"--init_from={models['instruct']}", "--words=cat,jump,small",
                                           "--ending=a happy ending", "--language=english", "--start=Once",
                                           "--max_new_tokens=8", "--output_format=jsonl", f"--out_file={out}"])
    assert result.returncode == 0, result.stderr
    [record] = [json.loads(line) for line in open(out, encoding="utf-8")]
    assert record["instruction"] == "Words: cat, jump, small\nEnding: a happy ending\nStory:\n"
    assert record["story"].startswith("Once") and "Words" not in record["story"]
    hindi = run_main(sample_script.main, [f"--init_from={models['instruct']}", "--words=बिल्ली", "--ending=a happy ending",
                                          "--language=hindi", "--max_new_tokens=4", "--output_format=jsonl"])
    assert json.loads(hindi.stdout)["instruction"] == "शब्द: बिल्ली\nअंत: खुशी भरा अंत\nकहानी:\n"
    specs = write_jsonl(str(tmp_path / "specs.jsonl"), [{"words": ["dog", "run"]}, {"noun": "sun", "start": "The"}])
    result = run_main(sample_script.main, [f"--init_from={models['instruct']}", f"--spec_file={specs}",
                                           "--language=english", "--max_new_tokens=4", "--output_format=jsonl"])
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["instruction"] for r in records] == ["Words: dog, run\nStory:\n", "Words: sun\nStory:\n"]
    assert records[1]["story"].startswith("The")
    ambiguous = run_main(sample_script.main, [f"--init_from={models['instruct']}", "--words=cat"])
    assert ambiguous.returncode == 1 and ambiguous.stderr.strip().endswith(
        "the model was trained on english, hindi; choose the spec's language with --language")
    plain = run_main(sample_script.main, [f"--init_from={models['plain']}", "--words=cat,jump"])
    assert plain.returncode == 1 and plain.stderr.strip() == (
        f"error: {models['plain']}/ckpt_best.pt: this model was trained on plain stories, so it cannot follow a "
        f"spec (words, ending, features, ...); train one on a dataset prepared with --format=instruct")


def test_serve_builds_the_block_from_request_fields_or_a_chat_message(models):
    slots = {}
    for name in ("instruct", "plain"):
        cfg = serve.SimpleNamespace(**{**serve.DEFAULTS, "init_from": models[name], "model_name": name})
        [slots[name]] = serve.load_slots(cfg, "cpu", "float32")
    story_server = serve.StoryServer(list(slots.values()))
    _, request = story_server.parse_request({"model": "instruct", "words": ["cat", "jump"], "max_tokens": 4}, chat=False)
    fmt, language = slots["instruct"].instruct
    assert request.prompt == "" and request.instruction == fmt.render({"words": ["cat", "jump"]}, language)
    _, chat = story_server.parse_request({"model": "instruct", "max_tokens": 4, "messages": [
        {"role": "user", "content": "Words: cat, jump\nStory: Once"}]}, chat=True)
    assert chat.instruction == request.instruction and chat.prompt == "Once"
    generation = serve.Generation(slots["instruct"], request, 10)
    tokenizer = slots["instruct"].tokenizer
    assert generation.prompt_ids == [tokenizer.bos_id] + tokenizer.encode(request.instruction)
    with pytest.raises(serve.RequestError, match="model 'plain' was trained on plain stories and cannot follow a spec"):
        story_server.parse_request({"model": "plain", "words": "cat", "prompt": "Once"}, chat=False)
    _, plain_chat = story_server.parse_request({"model": "plain", "messages": [
        {"role": "user", "content": "Words: cat"}]}, chat=True)
    assert plain_chat.instruction == "" and plain_chat.prompt == "Words: cat"  # to a plain model, just an opening


def test_a_chat_message_parses_as_a_spec_in_the_models_labels_or_english():
    fmt = instruct.InstructFormat(labels={"hindi": instruct.labels_for("hindi")})
    assert instruct.parse_block_message("शब्द: बिल्ली, कूदना\nअंत: खुशी भरा अंत\nकहानी: एक दिन", fmt, "hindi") == (
        {"words": ["बिल्ली", "कूदना"], "ending": "खुशी भरा अंत"}, "एक दिन")
    assert instruct.parse_block_message("Words: cat\nFeatures: dialogue", fmt, "hindi") == (
        {"words": ["cat"], "features": ["dialogue"]}, "")
    assert instruct.parse_block_message("एक दिन एक बिल्ली", fmt, "hindi") is None


def test_instruct_eval_tables_word_coverage_of_the_instruct_and_plain_models(models, tmp_path):
    instruct_eval = load_script("scripts/instruct_eval.py")
    out = tmp_path / "eval"
    result = run_main(instruct_eval.main, [f"--instruct={models['instruct']}", f"--plain={models['plain']}",
                                           "--language=english", "--num_specs=3", "--max_new_tokens=6",
                                           f"--out_dir={out}"])
    assert result.returncode == 0, result.stderr
    rows = json.load(open(out / "instruct_eval.json"))["rows"]
    assert [r["condition"] for r in rows] == ["instruct, spec", "plain, words opening", "plain, no prompt"]
    samples = [json.loads(line) for line in open(out / "samples.jsonl", encoding="utf-8")]
    assert len(samples) == 9 and all(s["language"] == "english" and s["noun"] for s in samples)
    instructed = [s for s in samples if s["condition"] == "instruct, spec"]
    assert all(s["instruction"].startswith(f"Words: {s['noun']}, {s['verb']}, {s['adjective']}\nEnding: ")
               for s in instructed)
    # coverage is counted on what the model wrote: the opening that holds the three words does not count
    opened = [s for s in samples if s["condition"] == "plain, words opening"]
    written = [s["story"][len(s["prompt"]):] for s in opened]
    assert rows[1]["all_words"] == instruct_eval.coverage(written, opened, "english")["all_words"]
    assert "| instruct, spec |" in (out / "instruct_eval.md").read_text()
    swapped = run_main(instruct_eval.main, [f"--instruct={models['plain']}", "--language=english", "--num_specs=1"])
    assert swapped.returncode == 1 and "trained on plain stories" in swapped.stderr


def test_word_coverage_counts_inflected_uses_per_spec():
    specs = [{"noun": "बिल्ली", "verb": "खेलना", "adjective": "छोटा"}, {"noun": "बिल्ली", "verb": "खेलना", "adjective": "छोटा"}]
    stories = ["दो छोटी बिल्लियाँ आँगन में खेल रही थीं।", "एक कुत्ता सो रहा था।"]
    instruct_eval = load_script("scripts/instruct_eval.py")
    assert instruct_eval.coverage(stories, specs, "hindi") == {"all_words": 0.5, "words": 0.5, "noun": 0.5,
                                                               "verb": 0.5, "adjective": 0.5}
