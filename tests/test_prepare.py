"""prepare.py end to end: inputs, framing, meta.json counts, split determinism, hygiene, and bad input."""
import json
import os
import unicodedata

import numpy as np
import pytest
from helpers import (
    PREPARE,
    STORIES,
    load_script,
    run,
    run_main,
    story_records,
    write_jsonl,
)

from regional_tinystories import tokenizer as tk

decode_data = load_script("training-inference/data/decode_data.py")
prepare_script = load_script("training-inference/data/prepare.py")



def prepare(tmp_path, source, *extra, name="ds", check=True):
    """Run prepare.py's main in this process (much faster than a subprocess); returns (Result, out folder)."""
    result = run_main(prepare_script.main, [f"--input={source}", f"--name={name}", f"--out_dir={tmp_path / 'out'}",
                                            "--tokenizer=sp-bpe:512", "--val_fraction=0.25", "--workers=1", *extra])
    assert not check or result.returncode == 0, result.stderr
    return result, tmp_path / "out" / name


def decode(*args):
    return run_main(decode_data.main, list(args))


def read_docs(out_dir, split):
    """Decode a .bin back into its documents, checking the <bos> ... <eos> framing on the way."""
    meta = json.loads((out_dir / "meta.json").read_text())
    tok = tk.load_tokenizer(meta["tokenizer"], str(out_dir))
    data = np.fromfile(out_dir / f"{split}.bin", dtype=meta["dtype"]).tolist()
    docs, start = [], None
    for i, t in enumerate(data):
        if t == meta["bos_id"]:
            assert start is None
            start = i + 1
        elif t == meta["eos_id"]:
            docs.append(tok.decode(data[start:i]))
            start = None
    assert start is None
    return docs


def test_jsonl_corpus_writes_framed_bins_and_meta(tmp_path):
    records = story_records(3)
    corpus = write_jsonl(str(tmp_path / "c.jsonl"), records)
    proc, out = prepare(tmp_path, corpus)
    assert "train" in proc.stdout and "dropped: 0 empty, 0 duplicate" in proc.stdout
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["tokenizer"]["kind"] == "sentencepiece"
    assert (out / meta["tokenizer"]["file"]).is_file()
    train, val = read_docs(out, "train"), read_docs(out, "val")
    assert sorted(train + val) == sorted(r["story"] for r in records)  # every story, once, losslessly
    for split, docs in (("train", train), ("val", val)):
        c = meta["splits"][split]
        assert c["documents"] == len(docs) > 0
        assert c["tokens"] == os.path.getsize(out / f"{split}.bin") // 2
        assert c["bytes"] == sum(len(d.encode("utf-8")) for d in docs)
    assert decode(str(out), "--n=30").returncode == 0


def test_split_is_deterministic_and_seeded(tmp_path):
    corpus = write_jsonl(str(tmp_path / "c.jsonl"), story_records(4))
    _, a = prepare(tmp_path, corpus, name="a")
    _, b = prepare(tmp_path, corpus, name="b")
    _, c = prepare(tmp_path, corpus, "--seed=7", name="c")
    assert (a / "val.bin").read_bytes() == (b / "val.bin").read_bytes()
    assert sorted(read_docs(a, "val")) != sorted(read_docs(c, "val"))


def test_two_workers_write_the_same_bytes_as_one(tmp_path, monkeypatch):
    # batches of ~200 characters: the corpus spans many batches, so the workers' results must come back in order
    monkeypatch.setattr(prepare_script, "BATCH_BYTES", 200)
    records = story_records(6)
    corpus = write_jsonl(str(tmp_path / "c.jsonl"), records)
    assert sum(len(r["story"]) for r in records) > 10 * prepare_script.BATCH_BYTES
    _, one = prepare(tmp_path, corpus, name="one")
    _, two = prepare(tmp_path, corpus, "--workers=2", name="two")
    for f in ("train.bin", "val.bin"):
        assert (one / f).read_bytes() == (two / f).read_bytes()


def test_json_txt_folder_and_custom_field(tmp_path):
    records = story_records(2, field="Translated Story")
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "a.json").write_text(json.dumps(records[:8], ensure_ascii=False), encoding="utf-8")
    write_jsonl(str(tmp_path / "shards" / "b.jsonl"), records[8:])
    _, out = prepare(tmp_path, tmp_path / "shards", "--text_field=Translated Story")
    assert sorted(read_docs(out, "train") + read_docs(out, "val")) == sorted(r["Translated Story"] for r in records)

    txt = tmp_path / "c.txt"
    txt.write_text("\n\n".join(STORIES * 2) + "\n", encoding="utf-8")
    _, out = prepare(tmp_path, txt, name="txt")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == len(STORIES)
    assert meta["dropped"]["duplicate"] == len(STORIES)


def test_hugging_face_dataset_from_a_local_folder(tmp_path):
    import datasets
    folder = tmp_path / "hfds"
    folder.mkdir()
    datasets.Dataset.from_list([{"text": s} for s in STORIES * 2]).to_parquet(str(folder / "train.parquet"))
    _, out = prepare(tmp_path, f"hf:{folder}", "--text_field=text")
    assert sorted(set(read_docs(out, "train") + read_docs(out, "val"))) == sorted(STORIES)


def test_nfc_normalisation_empty_and_duplicate_documents(tmp_path):
    nfd = unicodedata.normalize("NFD", "café नमस्ते क़िला")
    assert nfd != unicodedata.normalize("NFC", nfd)
    records = story_records(2) + [{"story": nfd}, {"story": "   "}, {"story": ""}, {"story": STORIES[0]},
                                  {"story": unicodedata.normalize("NFC", nfd)}]
    proc, out = prepare(tmp_path, write_jsonl(str(tmp_path / "c.jsonl"), records))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dropped"] == {"empty": 2, "duplicate": 2}  # STORIES[0] again, and the NFD twin of the NFC text
    assert "dropped: 2 empty, 2 duplicate" in proc.stdout
    docs = read_docs(out, "train") + read_docs(out, "val")
    assert unicodedata.normalize("NFC", nfd) in docs and nfd not in docs


def test_vocabulary_over_uint16_uses_uint32_and_refuses_uint16(tmp_path):
    from test_tokenizers import save_hf_tokenizer
    words = sorted({w for s in STORIES for w in s.split()}) + [f"w{i}" for i in range(70_000)]
    hf_dir = save_hf_tokenizer(str(tmp_path / "big"), vocab_words=words)
    corpus = write_jsonl(str(tmp_path / "c.jsonl"), story_records(3))
    base = [f"--input={corpus}", f"--out_dir={tmp_path / 'out'}", f"--tokenizer=hf:{hf_dir}", "--workers=1",
            "--val_fraction=0.25"]
    assert run_main(prepare_script.main, base + ["--name=auto"]).returncode == 0
    meta = json.loads((tmp_path / "out" / "auto" / "meta.json").read_text())
    assert meta["dtype"] == "uint32" and meta["vocab_size"] > 65536
    result = run_main(prepare_script.main, base + ["--name=u16", "--dtype=uint16"])
    assert result.returncode == 1 and "does not fit --dtype=uint16" in result.stderr


@pytest.mark.parametrize("setup, expected", [
    (lambda p: str(p / "missing.jsonl"), "missing.jsonl: no such file or folder"),
    (lambda p: write_jsonl(str(p / "e.jsonl"), [{"story": ""}, {"story": " "}]), "empty corpus"),
    (lambda p: write_jsonl(str(p / "f.jsonl"), [{"ID": 1, "text": "hi"}]),
     "record has no field 'story' (fields seen: ID, text)"),
    (lambda p: (p / "bad.jsonl").write_text('{"story": "ok"}\n{"story": "broken\n', encoding="utf-8") and
     str(p / "bad.jsonl"), "bad.jsonl:2: not valid JSON"),
    (lambda p: (p / "x.csv").write_text("a,b\n") and str(p / "x.csv"), "unsupported file type"),
])
def test_bad_input_gets_one_clear_line(tmp_path, setup, expected):
    proc, out = prepare(tmp_path, setup(tmp_path), check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert not list(out.parent.glob(".*"))  # no temporary dataset folder is left behind


def test_failure_mid_corpus_with_workers_leaves_no_partial_files(tmp_path):
    records = story_records(40)
    corpus = tmp_path / "c.jsonl"
    write_jsonl(str(corpus), records)
    with open(corpus, "a", encoding="utf-8") as f:
        f.write('{"story": broken\n')
    proc, out = prepare(tmp_path, corpus, "--workers=2", check=False)
    assert proc.returncode == 1 and f"c.jsonl:{len(records) + 1}: not valid JSON" in proc.stderr
    assert not out.exists() and not list(out.parent.glob(".*"))


def test_hub_dataset_offline_is_one_line(tmp_path):
    corpus = "hf:no-such-user/no-such-dataset"
    proc = run(PREPARE, f"--input={corpus}", f"--out_dir={tmp_path}", "--tokenizer=sp-bpe:512", check=False,
               env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1
    assert "hf:no-such-user/no-such-dataset: could not load the Hugging Face dataset" in lines[0]


def test_decode_data_detects_corruption(tmp_path):
    corpus = write_jsonl(str(tmp_path / "c.jsonl"), story_records(3))
    _, out = prepare(tmp_path, corpus)
    good = (out / "train.bin").read_bytes()
    meta = json.loads((out / "meta.json").read_text())

    (out / "train.bin").write_bytes(good[:-1])  # torn write
    proc = decode(str(out))
    assert proc.returncode == 1 and "not a whole number of uint16 tokens" in proc.stderr

    (out / "train.bin").write_bytes(good + good[:4])  # more tokens than meta.json says
    proc = decode(str(out))
    assert proc.returncode == 1 and "meta.json says" in proc.stderr

    data = np.frombuffer(good, dtype=np.uint16).copy()
    second_bos = np.flatnonzero(data == meta["bos_id"])[1]
    data[second_bos - 1] = 100  # the <eos> before a document replaced by text
    (out / "train.bin").write_bytes(data.tobytes())
    proc = decode(str(out))
    assert proc.returncode == 1 and "framing broken" in proc.stderr
