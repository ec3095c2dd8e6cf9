"""Every tokenizer kind, offline: trained SentencePiece / byte-level BPE, tiktoken from local ranks, HF from a dir."""
import shutil

import pytest
import tiktoken
from helpers import PREPARE, STORIES, run, write_jsonl

from regional_tinystories import tokenizer as tk

SAMPLES = ["एक दिन छोटी मीरा बाज़ार गई।", "একদিন ছোট্ট টুনু নদীর ধারে গেল।",
           "Tom had a red ball.\nHe liked it.", "  spaces  and\ttabs  "]


@pytest.mark.parametrize("name", ["sp-bpe:512", "sp-unigram:512", "bpe:512"])
def test_trained_tokenizer_round_trip_and_reload(tmp_path, name):
    tok = tk.train_tokenizer(tk.parse_name(name), STORIES * 5, str(tmp_path / "tok"))
    assert tok.bos_id != tok.eos_id
    assert 256 < tok.vocab_size <= int(name.split(":")[1])
    for text in SAMPLES:
        ids = tok.encode(text)
        assert tok.bos_id not in ids and tok.eos_id not in ids
        assert tok.decode(ids) == text  # byte fallback / byte-level: lossless, even for unseen characters
    assert tok.encode_batch(SAMPLES) == [tok.encode(t) for t in SAMPLES]

    again = tk.load_tokenizer(tok.spec, str(tmp_path / "tok"))  # loadable from its folder, without the corpus
    assert again.encode(SAMPLES[0]) == tok.encode(SAMPLES[0])
    exported = tk.export(tok)
    shutil.rmtree(tmp_path / "tok")  # a checkpoint's export needs no folder at all
    assert tk.from_export(exported).encode(SAMPLES[1]) == tok.encode(SAMPLES[1])


def test_bytelevel_bpe_keeps_indic_vowel_signs_inside_words(tmp_path):
    tok = tk.train_tokenizer(tk.parse_name("bpe:512"), STORIES * 5, str(tmp_path))
    pieces = [p for p, _ in tok.tok.pre_tokenizer.pre_tokenize_str("किताबें पढ़ो")]
    assert len(pieces) == 2  # GPT-2's regex would cut these words at every matra


def test_trained_vocab_size_is_configurable(tmp_path):
    small = tk.train_tokenizer(tk.parse_name("sp-bpe:400"), STORIES * 5, str(tmp_path / "a"))
    large = tk.train_tokenizer(tk.parse_name("sp-bpe:600"), STORIES * 5, str(tmp_path / "b"))
    assert small.vocab_size < large.vocab_size
    assert len(large.encode(STORIES[0])) < len(small.encode(STORIES[0]))


def local_tiktoken_encoding():
    ranks = {bytes([i]): i for i in range(256)}
    for i, merge in enumerate([b"th", b"he", b"the", b" t", b"in"]):
        ranks[merge] = 256 + i
    return tiktoken.Encoding(name="local-test", pat_str=r"""'s|'t| ?\w+| ?[^\s\w]+|\s+""",
                             mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 300})


def test_tiktoken_from_local_ranks():
    tok = tk.TiktokenTokenizer(local_tiktoken_encoding(), {"kind": "tiktoken", "name": "local-test"})
    assert tok.bos_id == tok.eos_id == 300
    assert tok.vocab_size == 301
    text = "the thin hen सब"
    ids = tok.encode(text)
    assert 258 in ids  # "the" merged
    assert tok.decode(ids) == text
    assert tok.decode([300] + ids + [300]) == text  # framing tokens are not text


def test_tiktoken_download_failure_is_one_line(monkeypatch, tmp_path):
    import requests
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))

    def offline(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to resolve 'openaipublic.blob.core.windows.net'")
    monkeypatch.setattr(requests, "get", offline)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    with pytest.raises(tk.TokenizerError) as err:
        tk.load_tokenizer(tk.parse_name("tiktoken:gpt2"))
    message = str(err.value)
    assert message.startswith("tokenizer tiktoken:gpt2: could not load") and "ConnectionError" in message
    assert "\n" not in message


def save_hf_tokenizer(path, bos="<s>", eos="</s>", vocab_words=None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    words = vocab_words or sorted({w for s in STORIES for w in s.split()})
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for w in words:
        vocab.setdefault(w, len(vocab))
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    kwargs = {"unk_token": "<unk>"}
    if bos:
        kwargs["bos_token"] = bos
    if eos:
        kwargs["eos_token"] = eos
    PreTrainedTokenizerFast(tokenizer_object=raw, **kwargs).save_pretrained(path)
    return path


def test_hf_tokenizer_from_local_dir(tmp_path):
    path = save_hf_tokenizer(str(tmp_path / "hf"))
    tok = tk.load_tokenizer(tk.parse_name(f"hf:{path}"))
    assert (tok.bos_id, tok.eos_id) == (1, 2)
    ids = tok.encode(STORIES[5])
    assert 0 not in ids and tok.decode(ids) == STORIES[5]


def test_hf_tokenizer_without_eos_is_rejected(tmp_path):
    path = save_hf_tokenizer(str(tmp_path / "hf"), eos=None)
    with pytest.raises(tk.TokenizerError, match="defines no eos token"):
        tk.load_tokenizer(tk.parse_name(f"hf:{path}"))


def test_presets_and_bad_names():
    assert tk.parse_name("sarvam") == {"kind": "hf", "name": "sarvamai/sarvam-1"}
    assert tk.parse_name("sutra") == {"kind": "hf", "name": "TWO/sutra-mlt256-v2"}
    for bad in ["sp-bpe:abc", "sp-bpe:100", "wordpiece:8000", "tiktoken:"]:
        with pytest.raises(tk.TokenizerError):
            tk.parse_name(bad)


def test_hub_tokenizer_offline_fails_with_one_line(tmp_path):
    corpus = write_jsonl(str(tmp_path / "c.jsonl"), [{"story": s} for s in STORIES])
    proc = run(PREPARE, f"--input={corpus}", f"--out_dir={tmp_path}", "--tokenizer=sarvam", check=False,
               env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")})
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: tokenizer hf:sarvamai/sarvam-1: could not load it")
