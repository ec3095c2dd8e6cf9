"""prepare.py under failure: a rerun killed or failing midway never mixes tokenizers, overlapping input and output
are refused before any file is touched, and awkward corpora (make_requests output folders, non-UTF-8 bytes, one
huge line, evaluation-only splits) get the right outcome."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import PREPARE, ROOT, STORIES, load_script, run_main, story_records, write_jsonl

from regional_tinystories import tokenizer as tk

prepare_script = load_script("training-inference/data/prepare.py")
decode_data = load_script("training-inference/data/decode_data.py")


def prepare(out_root, source, *extra, name="ds", tokenizer="sp-bpe:400"):
    return run_main(prepare_script.main, [f"--input={source}", f"--name={name}", f"--out_dir={out_root}",
                                          f"--tokenizer={tokenizer}", "--val_fraction=0.2", "--workers=1", *extra])


def dataset_is_consistent(folder):
    """The tokenizer beside the .bin files is the one they were written with, and decode_data.py agrees."""
    meta = json.loads((folder / "meta.json").read_text())
    tok = tk.load_dataset_tokenizer(meta, str(folder))  # raises on a mismatched tokenizer file
    result = run_main(decode_data.main, [str(folder), "--n=5"])
    assert result.returncode == 0, result.stderr
    return meta, tok


def test_meta_records_tokenizer_hash_and_max_id(tmp_path):
    corpus = write_jsonl(str(tmp_path / "c.jsonl"), story_records(6))
    assert prepare(tmp_path / "out", corpus).returncode == 0
    meta, tok = dataset_is_consistent(tmp_path / "out" / "ds")
    ids = np.concatenate([np.fromfile(tmp_path / "out" / "ds" / f"{s}.bin", dtype=meta["dtype"]) for s in ("train", "val")])
    assert meta["max_id"] == int(ids.max()) < meta["vocab_size"]
    assert meta["tokenizer_sha256"] == tk.files_sha256(tok)


def test_a_swapped_tokenizer_file_is_refused(tmp_path):
    corpus = write_jsonl(str(tmp_path / "c.jsonl"), story_records(6))
    assert prepare(tmp_path / "a", corpus, tokenizer="sp-bpe:400").returncode == 0
    assert prepare(tmp_path / "b", corpus, tokenizer="sp-bpe:450").returncode == 0
    target = tmp_path / "a" / "ds" / "tokenizer.model"
    target.write_bytes((tmp_path / "b" / "ds" / "tokenizer.model").read_bytes())
    result = run_main(decode_data.main, [str(tmp_path / "a" / "ds")])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1
    assert lines[0] == f"error: {tmp_path / 'a' / 'ds'}: the tokenizer file does not match meta.json (it was " \
                       f"replaced after prepare.py wrote the .bin files); run prepare.py again"


def test_sigkill_during_a_rerun_leaves_the_old_dataset_whole(tmp_path):
    small = write_jsonl(str(tmp_path / "small.jsonl"), story_records(4))
    big = write_jsonl(str(tmp_path / "big.jsonl"), story_records(4000))  # a few seconds of work
    out = tmp_path / "out"
    assert prepare(out, small, tokenizer="sp-bpe:450").returncode == 0
    before = {p.name: p.read_bytes() for p in (out / "ds").iterdir()}
    outcomes = []
    for delay in (0.3, 1.0, 2.0, 3.0):
        proc = subprocess.Popen([sys.executable, PREPARE, f"--input={big}", "--name=ds", f"--out_dir={out}",
                                 "--tokenizer=sp-bpe:500", "--val_fraction=0.2", "--workers=2"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # the next run (here: a rerun of the small one) recovers and cleans up; until then the folder is whole
        if (out / "ds").exists():
            meta, _ = dataset_is_consistent(out / "ds")
            after = {p.name: p.read_bytes() for p in (out / "ds").iterdir()}
            outcomes.append("old" if after == before else "new")
            assert after == before or meta["records_read"] == 4000 * len(STORIES)
        else:  # killed between the two renames of the swap: the next run puts the old folder back
            outcomes.append("between")
        assert prepare(out, small, tokenizer="sp-bpe:450").returncode == 0
        meta, _ = dataset_is_consistent(out / "ds")
        assert meta["records_read"] == 4 * len(STORIES)
        assert sorted(os.listdir(out)) == ["ds"]  # no temporary folders of the killed runs are left
        before = {p.name: p.read_bytes() for p in (out / "ds").iterdir()}
    assert "old" in outcomes  # at least one kill landed mid-run


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_cleans_up_and_says_so(tmp_path, sig):
    # ~15 MB: a few seconds of work, so the signal lands mid-run even on a fast CPU (3 MB took 0.6 s on one)
    big = write_jsonl(str(tmp_path / "big.jsonl"), story_records(15000))
    proc = subprocess.Popen([sys.executable, PREPARE, f"--input={big}", "--name=ds", f"--out_dir={tmp_path / 'out'}",
                             "--tokenizer=sp-bpe:500", "--workers=1"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    while "training" not in proc.stdout.readline():  # it is past the argument checks and working
        pass
    time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1] == "error: interrupted; the dataset folder was left as it was before this run"
    assert "Traceback" not in err
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize("layout", ["same", "out_inside_input", "input_inside_out", "symlink"])
def test_overlapping_input_and_output_are_refused_before_touching_files(tmp_path, layout):
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    write_jsonl(str(corpus_dir / "stories.jsonl"), story_records(3))
    before = (corpus_dir / "stories.jsonl").read_bytes()
    if layout == "same":
        args = [f"--input={corpus_dir}", f"--out_dir={tmp_path}", "--name=corpus"]
    elif layout == "out_inside_input":
        args = [f"--input={corpus_dir}", f"--out_dir={corpus_dir}", "--name=ds"]
    elif layout == "input_inside_out":
        args = [f"--input={corpus_dir / 'stories.jsonl'}", f"--out_dir={tmp_path}", "--name=corpus"]
    else:
        os.symlink(corpus_dir, tmp_path / "link")
        args = [f"--input={tmp_path / 'link'}", f"--out_dir={tmp_path}", "--name=corpus"]
    result = run_main(prepare_script.main, args + ["--tokenizer=sp-bpe:450", "--workers=1"])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "overlap" in lines[0], result.stderr
    assert os.listdir(corpus_dir) == ["stories.jsonl"] and (corpus_dir / "stories.jsonl").read_bytes() == before


def test_a_make_requests_output_folder_reads_its_stories_only(tmp_path):
    folder = tmp_path / "stories"
    records = story_records(3)
    write_jsonl(str(folder / "hindi-2-000.jsonl"), records)
    write_jsonl(str(folder / "hindi-2-000.failed.jsonl"), [{"ID": "x", "error": "timeout"}])
    (folder / ".lock").write_text("")
    assert prepare(tmp_path / "out", folder).returncode == 0
    meta = json.loads((tmp_path / "out" / "ds" / "meta.json").read_text())
    assert meta["records_read"] == len(records)


def test_gzipped_jsonl_is_read(tmp_path):
    import gzip
    records = story_records(3)
    with gzip.open(tmp_path / "c.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    assert prepare(tmp_path / "out", tmp_path / "c.jsonl.gz").returncode == 0
    assert json.loads((tmp_path / "out" / "ds" / "meta.json").read_text())["records_read"] == len(records)


def test_non_utf8_input_names_the_line_and_byte(tmp_path):
    good = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in story_records(2)).encode()
    (tmp_path / "c.jsonl").write_bytes(good + b'{"story": "caf\xe9"}\n')
    result = prepare(tmp_path / "out", tmp_path / "c.jsonl")
    assert result.returncode == 1
    line = len(story_records(2)) + 1
    assert result.stderr.strip() == f"error: {tmp_path / 'c.jsonl'}:{line}: not UTF-8 text (byte {len(good) + 14} of the file)"


def test_a_corpus_that_is_one_huge_line(tmp_path):
    (tmp_path / "one.txt").write_text(" ".join(STORIES * 400), encoding="utf-8")  # ~300 KB, no newline
    for tokenizer in ("sp-bpe:400", "sp-unigram:400"):
        result = run_main(prepare_script.main, [f"--input={tmp_path / 'one.txt'}", "--name=one", "--txt_mode=line",
                                                f"--out_dir={tmp_path / 'out'}", f"--tokenizer={tokenizer}",
                                                "--val_fraction=0.5", "--seed=3", "--workers=1"])
        # one document cannot be split into train and val: the error says so (not SentencePiece's INTERNAL)
        assert result.returncode == 1 and "split is empty" in result.stderr and "INTERNAL" not in result.stderr
    text = "\n".join(f"{i} " + " ".join(STORIES * 100) for i in range(4))  # four huge lines, one document each
    (tmp_path / "four.txt").write_text(text, encoding="utf-8")
    result = run_main(prepare_script.main, [f"--input={tmp_path / 'four.txt'}", "--name=four", "--txt_mode=line",
                                            f"--out_dir={tmp_path / 'out'}", "--tokenizer=sp-bpe:400",
                                            "--val_fraction=0.5", "--workers=1"])
    assert result.returncode == 0, result.stderr
    dataset_is_consistent(tmp_path / "out" / "four")


def test_evaluation_only_dataset_with_val_fraction_one(tmp_path):
    corpus = write_jsonl(str(tmp_path / "c.jsonl"), story_records(4))
    assert prepare(tmp_path / "out", corpus, name="base").returncode == 0
    heldout = write_jsonl(str(tmp_path / "h.jsonl"), story_records(2)[8:])
    result = prepare(tmp_path / "out", heldout, "--val_fraction=1.0", name="heldout",
                     tokenizer=f"from:{tmp_path / 'out' / 'base'}")
    assert result.returncode == 0, result.stderr
    meta, _ = dataset_is_consistent(tmp_path / "out" / "heldout")
    assert meta["splits"]["train"]["documents"] == 0 and meta["splits"]["val"]["documents"] == 8
    refused = prepare(tmp_path / "out", heldout, "--val_fraction=1.0", name="x")
    assert refused.returncode == 1 and "--val_fraction=1.0 leaves no documents to train" in refused.stderr
