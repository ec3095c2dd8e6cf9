"""export.py and regional_tinystories/convert.py: Hugging Face folders that transformers loads back with the same
greedy story and logits (both recipes, SentencePiece and byte-level BPE tokenizers), GGUF files that transformers'
own GGUF loader reads back, llama2.c files read back by a reader of our own, refusals in one line, and imports of
nanoGPT-format and transformers checkpoints."""
import json
import os
import struct

import numpy as np
import pytest
import torch
from helpers import STORIES, load_script, run_main

from regional_tinystories import checkpoint, convert
from regional_tinystories import tokenizer as tk
from regional_tinystories.model import GPT, ModelConfig
from regional_tinystories.sampling import SamplingConfig, generate_stories

export = load_script("training-inference/export.py")
PROMPT = "एक दिन छोटी मीरा"


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizers")
    texts = STORIES * 6
    return {kind: tk.train_tokenizer(tk.parse_name(kind), texts, str(folder / kind.replace(":", "-")))
            for kind in ("sp-bpe:500", "sp-unigram:400", "bpe:500")}


def trained_run(folder, tok, recipe, **overrides):
    """A tiny model trained for a moment on the stories (so its greedy text is real text), saved as a run."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32, recipe=recipe,
                            **overrides))
    ids = [i for s in STORIES for i in [tok.bos_id] + tok.encode(s) + [tok.eos_id]]
    data = torch.tensor(ids)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(60):
        starts = torch.randint(0, len(data) - 33, (8,), generator=torch.Generator().manual_seed(step))
        x = torch.stack([data[s:s + 32] for s in starts])
        y = torch.stack([data[s + 1:s + 33] for s in starts])
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    run = folder / f"{recipe}-{tok.spec['kind']}"
    run.mkdir(parents=True, exist_ok=True)
    checkpoint.save_atomic({"model_args": model.model_args(), "model": model.state_dict(), "tokenizer": tk.export(tok)},
                           str(run / "ckpt_best.pt"))
    return str(run)


@pytest.mark.parametrize("recipe, kind", [("modern", "sp-bpe:500"), ("classic", "sp-bpe:500"),
                                          ("modern", "bpe:500"), ("classic", "sp-unigram:400")])
def test_hf_export_reproduces_sample_py(tmp_path, tokenizers, recipe, kind):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    run = trained_run(tmp_path, tokenizers[kind], recipe, bias=recipe == "classic")
    out = tmp_path / "hf"
    result = run_main(export.main, [run, "--format=hf", f"--out={out}"])
    assert result.returncode == 0, result.stderr
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= set(os.listdir(out))
    hf_model = AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = AutoTokenizer.from_pretrained(out)
    assert type(hf_model).__name__ == ("LlamaForCausalLM" if recipe == "modern" else "GPT2LMHeadModel")
    model, tok, _ = checkpoint.load_model(run)
    for story in STORIES:  # AutoTokenizer encodes a story as prepare.py does: [bos] + ids
        assert hf_tok(story)["input_ids"] == [tok.bos_id] + tok.encode(story)
    ids = hf_tok(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ours, _ = model(ids, targets=ids)
        theirs = hf_model(ids).logits
    assert (ours - theirs).abs().max().item() < 1e-4
    record = next(generate_stories(model, tok, [PROMPT], SamplingConfig(max_new_tokens=30, temperature=0)))
    generated = hf_model.generate(ids, max_new_tokens=30, do_sample=False, eos_token_id=tok.eos_id,
                                  pad_token_id=tok.eos_id)
    new = generated[0, ids.shape[1]:].tolist()
    new = new[:new.index(tok.eos_id)] if tok.eos_id in new else new
    assert len(new) == record["n_tokens"]
    assert PROMPT + hf_tok.decode(new, skip_special_tokens=True) == record["story"] or \
        hf_tok.decode(ids[0].tolist() + new, skip_special_tokens=True) == record["story"]


@pytest.mark.parametrize("recipe", ["modern", "classic"])
def test_gguf_export_loads_in_transformers_with_the_same_greedy_story(tmp_path, tokenizers, recipe):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    run = trained_run(tmp_path, tokenizers["sp-bpe:500"], recipe)
    out = tmp_path / "gguf"
    assert run_main(export.main, [run, "--format=gguf", f"--out={out}"]).returncode == 0
    # transformers reads gpt2's GGUF context length into n_ctx, not n_positions: give it the model's window
    extra = {"n_positions": 64} if recipe == "classic" else {}
    hf_model = AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf", dtype=torch.float32, **extra).eval()
    hf_tok = AutoTokenizer.from_pretrained(out, gguf_file="model.gguf")
    model, tok, _ = checkpoint.load_model(run)
    ids = [tok.bos_id] + tok.encode(PROMPT)
    assert hf_tok(PROMPT)["input_ids"] == ids
    record = next(generate_stories(model, tok, [PROMPT], SamplingConfig(max_new_tokens=30, temperature=0)))
    generated = hf_model.generate(torch.tensor([ids]), max_new_tokens=30, do_sample=False, eos_token_id=tok.eos_id,
                                  pad_token_id=tok.eos_id)[0, len(ids):].tolist()
    generated = generated[:generated.index(tok.eos_id)] if tok.eos_id in generated else generated
    assert tok.decode(ids[1:] + generated) == record["story"]


@pytest.mark.parametrize("version", [0, 1])
def test_llama2c_export_reads_back(tmp_path, tokenizers, version):
    run = trained_run(tmp_path, tokenizers["sp-bpe:500"], "modern")
    out = tmp_path / "llama2c"
    assert run_main(export.main, [run, "--format=llama2c", f"--out={out}", f"--llama2c_version={version}"]).returncode == 0
    header, weights = convert.read_llama2c(str(out))
    model, tok, _ = checkpoint.load_model(run)
    c = model.config
    assert header == dict(version=version, dim=c.n_embd, hidden_dim=model.blocks[0].mlp.c_proj.weight.shape[1],
                          n_layers=c.n_layer, n_heads=c.n_head, n_kv_heads=c.n_head, vocab_size=c.vocab_size,
                          seq_len=c.block_size, shared_classifier=True)
    sd = model.state_dict()
    assert np.array_equal(weights["wte"], sd["wte.weight"].numpy())
    wq, wk, wv = sd["blocks.1.attn.c_attn.weight"].split(c.n_embd)
    assert np.array_equal(weights["wk"][1], wk.numpy()) and np.array_equal(weights["wv"][1], wv.numpy())
    gate, up = sd["blocks.0.mlp.c_fc.weight"].chunk(2)
    assert np.array_equal(weights["w1"][0], gate.numpy()) and np.array_equal(weights["w3"][0], up.numpy())
    assert np.array_equal(weights["final_norm"], sd["ln_f.weight"].numpy())
    # run.c's forward pass, in numpy from the file alone, gives the model's logits
    ids = [tok.bos_id] + tok.encode(PROMPT)
    with torch.no_grad():
        expected = model(torch.tensor([ids]), targets=torch.tensor([ids]))[0][0].numpy()
    assert np.abs(llama2c_forward(header, weights, ids) - expected).max() < 1e-3
    data = (out / "tokenizer.bin").read_bytes()
    (max_len,) = struct.unpack_from("I", data)
    offset, pieces = 4, []
    for _ in range(c.vocab_size):
        score, length = struct.unpack_from("fI", data, offset)
        pieces.append(data[offset + 8:offset + 8 + length].decode("utf-8"))
        offset += 8 + length
    assert offset == len(data) and max_len == max(len(p.encode()) for p in pieces)
    assert pieces[tok.bos_id] == "\n<s>\n" and pieces[tok.encode("दिन")[0]].replace(" ", "▁") == tok.id_to_piece(
        tok.encode("दिन")[0])


def llama2c_forward(h, w, ids, eps=float(np.finfo(np.float32).eps)):
    """run.c's transformer() in numpy, all positions at once (causal attention)."""
    C, H = h["dim"], h["n_heads"]
    d = C // H
    T = len(ids)

    def rmsnorm(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g
    pos = np.arange(T)[:, None]
    freq = 1.0 / 10000.0 ** (np.arange(0, d, 2) / d)
    cos, sin = np.cos(pos * freq), np.sin(pos * freq)

    def rope(x):  # (T, H, d): rotate adjacent pairs
        x1, x2 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x1 * cos[:, None] - x2 * sin[:, None]
        out[..., 1::2] = x1 * sin[:, None] + x2 * cos[:, None]
        return out
    x = w["wte"][ids].astype(np.float64)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for layer in range(h["n_layers"]):
        xb = rmsnorm(x, w["att_norm"][layer])
        q, k, v = (xb @ w[n][layer].T for n in ("wq", "wk", "wv"))
        q, k, v = rope(q.reshape(T, H, d)), rope(k.reshape(T, H, d)), v.reshape(T, H, d)
        att = np.einsum("thd,shd->hts", q, k) / np.sqrt(d) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        x = x + np.einsum("hts,shd->thd", att, v).reshape(T, C) @ w["wo"][layer].T
        xb = rmsnorm(x, w["ffn_norm"][layer])
        gate, up = xb @ w["w1"][layer].T, xb @ w["w3"][layer].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w["w2"][layer].T
    return rmsnorm(x, w["final_norm"]) @ (w["wte"] if h["shared_classifier"] else w["wcls"]).T


def test_refusals_are_one_line(tmp_path, tokenizers):
    qk = trained_run(tmp_path / "qk", tokenizers["sp-bpe:500"], "modern", qk_norm=True)
    for fmt in ("hf", "gguf", "llama2c"):
        result = run_main(export.main, [qk, f"--format={fmt}", f"--out={tmp_path / fmt}"])
        assert result.returncode == 1 and result.stderr.strip().startswith("error: the model uses QK-norm")
        assert len(result.stderr.strip().splitlines()) == 1
    classic = trained_run(tmp_path / "classic", tokenizers["sp-bpe:500"], "classic")
    result = run_main(export.main, [classic, "--format=llama2c", f"--out={tmp_path / 'c'}"])
    assert result.stderr.strip() == "error: llama2.c runs Llama-architecture models: only the modern recipe can be " \
                                    "exported to it"
    bpe = trained_run(tmp_path / "bpe", tokenizers["bpe:500"], "modern")
    result = run_main(export.main, [bpe, "--format=gguf", f"--out={tmp_path / 'g'}"])
    assert result.returncode == 1 and "GGUF export needs a SentencePiece tokenizer" in result.stderr
    result = run_main(export.main, [str(tmp_path / "missing"), "--format=hf", f"--out={tmp_path / 'm'}"])
    assert result.stderr.strip() == f"error: checkpoint {tmp_path / 'missing'}: not found"


def test_hf_round_trip_through_from_hf(tmp_path, tokenizers):
    for recipe in ("modern", "classic"):
        run = trained_run(tmp_path, tokenizers["sp-bpe:500"], recipe, bias=recipe == "classic")
        model, tok, _ = checkpoint.load_model(run)
        hf_model, _ = convert.to_hf(model, tok)
        args, state = convert.from_hf(hf_model)
        back = GPT(ModelConfig(**args)).eval()
        back.load_state_dict(state)
        ids = torch.tensor([[tok.bos_id] + tok.encode(PROMPT)])
        with torch.no_grad():
            assert torch.allclose(back(ids, targets=ids)[0], model(ids, targets=ids)[0], atol=1e-5)


# ----------------------------------------------------------------------------- imports

def nanogpt_checkpoint(model, path, compiled=True):
    """model's weights saved the way nanoGPT's train.py saves them: transformer.* names, the causal-mask buffer,
    torch.compile's _orig_mod. prefix, model_args without a recipe, and no tokenizer."""
    prefix = "_orig_mod." if compiled else ""
    state = {}
    for key, value in model.state_dict().items():
        key = key.replace("blocks.", "h.", 1)
        state[prefix + (key if key == "lm_head.weight" else "transformer." + key)] = value
    T = model.config.block_size
    for i in range(model.config.n_layer):
        state[f"{prefix}transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(T, T)).view(1, 1, T, T)
    c = model.config
    torch.save({"model": state, "model_args": dict(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd,
                                                   block_size=T, bias=c.bias, vocab_size=c.vocab_size, dropout=0.0),
                "iter_num": 5000, "best_val_loss": torch.tensor(1.5), "config": {"dataset": "hindi"}}, path)


def test_nanogpt_checkpoint_samples_like_the_original(tmp_path, tokenizers):
    sample = load_script("training-inference/sample.py")
    tok = tokenizers["sp-bpe:500"]
    run = trained_run(tmp_path, tok, "classic", bias=True)
    model, _, _ = checkpoint.load_model(run)
    nanogpt_checkpoint(model, tmp_path / "ckpt.pt")
    convert.hf_tokenizer(tok).save_pretrained(tmp_path / "tok")  # the tokenizer, as a transformers folder
    common = [f"--start={PROMPT}", "--temperature=0", "--max_new_tokens=20", "--output_format=jsonl"]
    ours = run_main(sample.main, [f"--init_from={run}", f"--out_file={tmp_path / 'a.jsonl'}", *common])
    theirs = run_main(sample.main, [f"--init_from={tmp_path / 'ckpt.pt'}", f"--tokenizer=hf:{tmp_path / 'tok'}",
                                    f"--out_file={tmp_path / 'b.jsonl'}", *common])
    assert ours.returncode == 0 and theirs.returncode == 0, theirs.stderr
    stories = [json.loads((tmp_path / name).read_text().splitlines()[0])["story"] for name in ("a.jsonl", "b.jsonl")]
    assert stories[0] == stories[1] and len(stories[0]) > len(PROMPT)

    result = run_main(sample.main, [f"--init_from={tmp_path / 'ckpt.pt'}", *common])
    assert result.returncode == 1 and result.stderr.strip() == (
        f"error: checkpoint {tmp_path / 'ckpt.pt'}: a nanoGPT checkpoint carries no tokenizer; name it with "
        f"--tokenizer= (e.g. tiktoken:gpt2, sarvam, sutra, hf:DIR)")
    big = tk.train_tokenizer(tk.parse_name("bpe:800"), STORIES * 6, str(tmp_path / "big"))
    convert.hf_tokenizer(big).save_pretrained(tmp_path / "bigtok")
    result = run_main(sample.main, [f"--init_from={tmp_path / 'ckpt.pt'}", f"--tokenizer=hf:{tmp_path / 'bigtok'}",
                                    *common])
    assert result.returncode == 1 and f"has {big.vocab_size} ids: not this model's tokenizer" in result.stderr


def test_gpt2_offline_is_one_line(tmp_path):
    from helpers import ROOT, run
    proc = run(os.path.join(ROOT, "training-inference", "sample.py"), "--init_from=gpt2", "--start=Once", check=False,
               env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1
    assert lines[0].startswith("error: model gpt2: could not be loaded through transformers (")


def test_a_local_transformers_model_loads_and_fine_tunes(tmp_path, tokenizers):
    from helpers import PREPARE, TRAIN, run, story_records, write_jsonl
    tok = tokenizers["sp-bpe:500"]
    run_dir = trained_run(tmp_path, tok, "modern")
    assert run_main(export.main, [run_dir, "--format=hf", f"--out={tmp_path / 'hf'}"]).returncode == 0
    model, _, _ = checkpoint.load_model(run_dir)
    imported, imported_tok, ckpt = checkpoint.load_model(str(tmp_path / "hf"))
    ids = torch.tensor([[tok.bos_id] + tok.encode(PROMPT)])
    with torch.no_grad():
        assert torch.allclose(imported(ids, targets=ids)[0], model(ids, targets=ids)[0], atol=1e-5)
    assert imported_tok.encode(PROMPT) == tok.encode(PROMPT)
    assert ckpt["tokenizer"]["files"]  # the tokenizer travels inside: no hub needed later
    corpus = write_jsonl(str(tmp_path / "c.jsonl"), story_records(6))
    run(PREPARE, f"--input={corpus}", "--name=d", f"--out_dir={tmp_path / 'data'}", f"--tokenizer=hf:{tmp_path / 'hf'}",
        "--val_fraction=0.2", "--workers=1")
    proc = run(TRAIN, f"--init_from={tmp_path / 'hf'}", f"--data_root={tmp_path / 'data'}", "--dataset=d",
               f"--out_dir={tmp_path / 'ft'}", "--max_iters=4", "--eval_interval=2", "--eval_iters=2",
               "--batch_size=4", "--block_size=32", "--warmup_iters=1", check=False)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ft" / "ckpt_last.pt").is_file()


# ----------------------------------------------------------------------------- the hub

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from helpers import TRAIN, prepare_dataset, run
    tmp = tmp_path_factory.mktemp("upload")
    root = prepare_dataset(tmp, name="demo-hindi")
    out = tmp / "run"
    run(TRAIN, "--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--max_iters=6",
        "--eval_interval=3", "--eval_iters=2", "--warmup_iters=1", "--dataset=demo-hindi", f"--data_root={root}",
        f"--out_dir={out}")
    return out


def test_upload_stages_the_checkpoint_an_export_and_a_model_card(tmp_path, finished_run):
    upload = load_script("scripts/upload_hf.py")
    stage = tmp_path / "stage"
    result = run_main(upload.main, [str(finished_run), "--repo=someone/tiny-hindi", "--stage_only",
                                    f"--out_dir={stage}"])
    assert result.returncode == 0, result.stderr
    assert {"ckpt_best.pt", "model.safetensors", "config.json", "tokenizer.json", "loss.png", "README.md"} <= \
        set(os.listdir(stage))
    card = (stage / "README.md").read_text(encoding="utf-8")
    summary = json.loads((finished_run / "summary.json").read_text())
    model, _, _ = checkpoint.load_model(str(finished_run))
    assert card.startswith("---\nlanguage: hi\n")
    assert f"{model.num_params():,} ({model.num_params(non_embedding=True):,} without embeddings)" in card
    assert f"| training tokens | {summary['tokens']:,} |" in card
    assert f"| best val bits per byte | {summary['best_val_bpb']:.4f} |" in card
    assert "python training-inference/train.py --n_layer=2" in card and "![loss curve](loss.png)" in card
    from transformers import AutoModelForCausalLM
    assert AutoModelForCausalLM.from_pretrained(stage) is not None


def test_upload_errors_are_one_line_and_never_show_the_token(tmp_path, finished_run):
    from helpers import ROOT, run
    script = os.path.join(ROOT, "scripts", "upload_hf.py")
    env = {"HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": ""}
    proc = run(script, str(finished_run), "--repo=someone/x", check=False, env=env)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "error: HF_TOKEN is not set: create a write token on the hub and export HF_TOKEN=..."]
    # a hub that is not there (a closed loopback port): the upload fails in one line
    env.update(HF_TOKEN="hf_secret_token_value", HF_ENDPOINT="http://127.0.0.1:9")
    proc = run(script, str(finished_run), "--repo=someone/x", check=False, env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: upload to someone/x failed (")
    assert "hf_secret_token_value" not in proc.stderr + proc.stdout
