"""Synonym augmentation (scripts/augment_synonyms.py) on real Hindi and Bangla demo stories: IDs and fields kept,
whole words replaced and never a part of one, the same seed giving the same corpus; the synonym files' format
errors (regional_tinystories/synonyms.py), and the coverage check of the real per-language files."""
import gzip
import json
import os
import unicodedata

import pytest
from helpers import ROOT, load_script, read_jsonl, run_main, write_jsonl

from regional_tinystories.metrics import WORD_PATTERN, words
from regional_tinystories.synonyms import load_synonyms, synonym_files, uncovered_words

augment_synonyms = load_script("scripts/augment_synonyms.py")

# Rows in the real files' format for words of the first demo stories, each synonym in the key's form (gender,
# number, case). Keys that begin longer words of those stories (बिस्कुट: बिस्कुटों, पेड़: पेड़ों, মা: মায়ের and মাথা,
# বাড়ি: বাড়ির) test that only whole words are replaced.
FIXTURE_ROWS = {
    "hindi": ["# fixture", "बहुत\tकाफ़ी|अत्यंत", "नदी\tसरिता", "पानी\tजल|नीर", "किनारे\tतट", "बिल्ली\tमार्जारी",
              "घर\tमकान|गृह", "जंगल\tवन", "छोटा\tनन्हा", "छोटी\tनन्ही", "पेड़\tवृक्ष|तरु", "रात\tरात्रि|निशा",
              "साफ़\tस्वच्छ", "तालाब\tसरोवर|पोखर", "दोस्त\tमित्र|साथी", "आवाज़\tध्वनि", "बिस्कुट\tकुकी", "डर\tभय"],
    "bangla": ["# fixture", "খুব\tভীষণ|বেশ", "ছোট্ট\tখুদে|পুঁচকে", "বড়\tবিশাল", "মা\tজননী|মাতা", "জল\tপানি|নীর",
               "বাড়ি\tগৃহ|ঘর", "লাল\tরাঙা", "নতুন\tনব", "শব্দ\tআওয়াজ", "ভয়\tডর|আতঙ্ক", "সবুজ\tহরিৎ",
               "সাদা\tশুভ্র|ধবল", "হঠাৎ\tআচমকা|সহসা", "একা\tএকলা"],
    "english": ["cat\tkitty", "big\tlarge|huge"],
}
PREFIX_WORDS = {"hindi": ["बिस्कुटों", "पेड़ों"], "bangla": ["মায়ের", "মাথা", "বাড়ির"]}


def write_tables(tmp_path, rows=FIXTURE_ROWS, skip=None):
    folder = tmp_path / "synonyms"
    for language, lines in rows.items():
        os.makedirs(folder / language, exist_ok=True)
        (folder / language / "synonyms.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        if skip and language in skip:
            (folder / language / "synonym_skip.txt").write_text("\n".join(skip[language]) + "\n", encoding="utf-8")
    return str(folder)


def demo_records(language, count=60):
    with gzip.open(os.path.join(ROOT, "data", "demo", f"{language}.jsonl.gz"), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line, _ in zip(f, range(count))]


def augment(tmp_path, records, *options, name="out"):
    corpus = write_jsonl(str(tmp_path / "corpus" / "in.jsonl"), records)
    out = str(tmp_path / name / "augmented.jsonl")
    result = run_main(augment_synonyms.main, [f"--input={corpus}", f"--out={out}",
                                              f"--synonyms_dir={write_tables(tmp_path)}", *options])
    assert result.returncode == 0, result.stderr
    return read_jsonl(out), result.stdout


@pytest.mark.parametrize("language", ["hindi", "bangla"])
def test_real_stories_keep_their_ids_and_only_whole_words_change(tmp_path, language):
    records = demo_records(language)
    out, summary = augment(tmp_path, records, "--story_share=1", "--word_share=1")
    table, _ = load_synonyms(language, write_tables(tmp_path))
    by_id = {r["ID"]: r for r in out}
    assert len(out) == len(records) and set(by_id) == {r["ID"] for r in records}  # (a)
    assert [r["ID"] for r in out] != [r["ID"] for r in records]  # shuffled
    allowed = {w for r in records for w in words(r["story"].lower())} | {s for row in table.values() for s in row}
    for record in records:
        result = by_id[record["ID"]]
        assert {k: v for k, v in result.items() if k not in ("story", "synonyms")} == \
            {k: v for k, v in record.items() if k != "story"}
        matches = list(WORD_PATTERN.finditer(record["story"]))
        before, after = [m.group() for m in matches], words(result["story"])
        assert set(after) <= allowed  # (b)
        assert not any(unicodedata.category(w[0]).startswith("M") for w in after)  # (c)
        # Word by word: a word changed only where the whole word is a key, into one of its synonyms, so a key that
        # begins a longer word (बिस्कुट in बिस्कुटों) never touches it, nor one half of a hyphen-joined pair; with
        # word_share=1 every other key is replaced.
        assert len(before) == len(after)
        for match, old, new in zip(matches, before, after):
            replaceable = old in table and not augment_synonyms.in_hyphenated_compound(record["story"], match)
            assert (new in table[old]) if replaceable else (new == old)
        assert result["synonyms"] == [[old, new] for old, new in zip(before, after) if old != new]
    replaced_words = sum(len(r["synonyms"]) for r in out)
    assert replaced_words > 50
    assert all(w in allowed and w not in table for w in PREFIX_WORDS[language])  # the corpus has those words
    assert summary.strip().endswith(f"{replaced_words} words replaced (100.0% of their replaceable words)")


@pytest.mark.parametrize("language", ["hindi", "bangla"])
def test_default_shares_change_half_the_stories_and_30_percent_of_their_words(tmp_path, language):
    records = demo_records(language)
    out, summary = augment(tmp_path, records)
    table, _ = load_synonyms(language, write_tables(tmp_path))
    changed = [r for r in out if r["synonyms"]]
    untouched = [r for r in out if not r["synonyms"]]
    assert 0 < len(changed) <= len(records) // 2 and len(changed) + len(untouched) == len(records)
    originals = {r["ID"]: r["story"] for r in records}
    assert all(r["story"] == originals[r["ID"]] and r["synonyms"] == [] for r in untouched)
    for record in changed:
        story = originals[record["ID"]]
        replaceable = sum(m.group() in table and not augment_synonyms.in_hyphenated_compound(story, m)
                          for m in WORD_PATTERN.finditer(story))
        assert len(record["synonyms"]) == max(1, round(0.3 * replaceable))
    assert f"{len(changed)} stories changed ({len(changed) / len(records):.1%})" in summary


def test_the_same_seed_gives_the_same_corpus_and_judge_copy(tmp_path):  # (d)
    records = demo_records("hindi", 30) + demo_records("bangla", 30)

    def run(name, seed):
        out, judge = tmp_path / name / "a.jsonl.gz", tmp_path / name / "a.judge.jsonl"
        corpus = write_jsonl(str(tmp_path / "in.jsonl"), records)
        result = run_main(augment_synonyms.main, [f"--input={corpus}", f"--out={out}", f"--judge_copy={judge}",
                                                  f"--synonyms_dir={write_tables(tmp_path)}", f"--seed={seed}"])
        assert result.returncode == 0, result.stderr
        return out.read_bytes(), judge.read_bytes()

    first = run("a", 1337)
    assert run("b", 1337) == first
    assert run("c", 7) != first
    augmented = [json.loads(line) for line in gzip.decompress(first[0]).decode("utf-8").splitlines()]
    judged = [json.loads(line) for line in first[1].decode("utf-8").splitlines()]
    assert [r["ID"] for r in augmented] == [r["ID"] for r in judged]
    for plain, marked in zip(augmented, judged):
        assert marked["synonyms"] == plain["synonyms"]
        # the judge copy is the augmented story with each replacement wrapped in ⟨ ⟩, in order
        assert marked["story"].replace("⟨", "").replace("⟩", "") == plain["story"]
        shown = [part.split("⟩")[0] for part in marked["story"].split("⟨")[1:]]
        assert shown == [new for _, new in plain["synonyms"]]


def test_english_is_matched_lowercased_and_keeps_the_capitals(tmp_path):
    records = [{"ID": "e1", "language": "mixed", "story": "The Cat saw a big cat. CAT! Big cats."}]
    out, _ = augment(tmp_path, records, "--language=english", "--story_share=1", "--word_share=1")
    assert out[0]["story"] in {f"The Kitty saw a {big} kitty. KITTY! {other_big} cats."
                               for big in ("large", "huge") for other_big in ("Large", "Huge")}
    assert [old for old, _ in out[0]["synonyms"]] == ["Cat", "big", "cat", "CAT", "Big"]


def test_story_share_zero_writes_every_record_unchanged(tmp_path):
    records = demo_records("hindi", 10)
    out, summary = augment(tmp_path, records, "--story_share=0")
    assert sorted(out, key=lambda r: r["ID"]) == sorted(({**r, "synonyms": []} for r in records), key=lambda r: r["ID"])
    assert "0 stories changed (0.0%), 0 words replaced" in summary


def run_with_rows(tmp_path, rows, skip=None, extra=()):
    corpus = write_jsonl(str(tmp_path / "in.jsonl"), demo_records("hindi", 3))
    folder = write_tables(tmp_path, {"hindi": rows}, skip={"hindi": skip} if skip else None)
    return run_main(augment_synonyms.main, [f"--input={corpus}", f"--out={tmp_path / 'out.jsonl'}",
                                            f"--synonyms_dir={folder}", *extra]), folder


@pytest.mark.parametrize("rows, line, message", [
    (["# comment", "कुत्ता श्वान"], 2, "expected 'word<TAB>synonym|synonym|...', got 'कुत्ता श्वान'"),
    (["कुत्ता\tश्वान\tकूकर"], 1, "expected 'word<TAB>synonym|synonym|...', got 'कुत्ता\\tश्वान\\tकूकर'"),
    (["नदी\tसरिता", "कुत्ता\tश्वान|"], 2, "empty synonym"),
    (["लाल पतंग\tपतंग"], 1, "key 'लाल पतंग' is not a single word (one word replaces one word)"),
    (["रंग-बिरंगा\tरंगीन"], 1, "key 'रंग-बिरंगा' is not a single word (one word replaces one word)"),
    (["cat\tice cream"], 1, "synonym 'ice cream' is not a single word (one word replaces one word)"),
    (["Cat\tkitty"], 1, "key 'Cat' is not lowercase"),
    (["कुत्ता\tश्वान|कुत्ता"], 1, "key 'कुत्ता' is listed as its own synonym"),
    (["कुत्ता\tश्वान|श्वान"], 1, "synonym 'श्वान' is listed twice"),
    (["# a", "", "नदी\tसरिता", "कुत्ता\tश्वान", "नदी\tतटिनी"], 5, "duplicate key 'नदी' (first on line 3)"),
])
def test_a_bad_row_is_one_error_line_naming_file_and_line(tmp_path, rows, line, message):  # (e)
    result, folder = run_with_rows(tmp_path, rows)
    assert result.returncode == 1 and not (tmp_path / "out.jsonl").exists()
    assert result.stderr == f"error: {os.path.join(folder, 'hindi', 'synonyms.tsv')}:{line}: {message}\n"


def test_a_skipped_word_that_is_also_a_key_is_refused(tmp_path):
    result, folder = run_with_rows(tmp_path, ["नदी\tसरिता", "कुत्ता\tश्वान"], skip=["# names", "भोलू", "कुत्ता"])
    synonyms_path, skip_path = synonym_files("hindi", folder)
    assert result.stderr == f"error: {skip_path}:3: 'कुत्ता' is skipped but is a key of {synonyms_path}:2\n"


def test_refusals_are_one_line(tmp_path):
    corpus = write_jsonl(str(tmp_path / "corpus" / "in.jsonl"), demo_records("hindi", 3) + demo_records("marathi", 1))
    folder = write_tables(tmp_path)

    def error(*options):
        result = run_main(augment_synonyms.main, [f"--input={corpus}", f"--synonyms_dir={folder}", *options])
        assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
        return result.stderr.strip()

    out = tmp_path / "out" / "a.jsonl"
    marathi = os.path.join(folder, "marathi", "synonyms.tsv")
    assert error(f"--out={out}") == f"error: {marathi}: no such file: there are no synonyms for 'marathi'"
    assert error(f"--out={out}", "--language=hindi", f"--judge_copy={out}") == \
        f"error: --judge_copy={out} is the same file as --out"
    inside = tmp_path / "corpus" / "syn.jsonl"  # beside the input file is fine, inside an input folder is not
    result = run_main(augment_synonyms.main, [f"--input={tmp_path / 'corpus'}", f"--out={inside}",
                                              f"--synonyms_dir={folder}", "--language=hindi"])
    assert result.stderr == (f"error: --out={inside} overlaps --input={tmp_path / 'corpus'}; "
                             "write the augmented corpus elsewhere\n")
    assert error(f"--out={corpus}", "--language=hindi") == \
        f"error: --out={corpus} overlaps --input={corpus}; write the augmented corpus elsewhere"
    assert error(f"--out={out}", "--language=hindi", "--word_share=1.5") == \
        "error: --word_share=1.5: must be between 0 and 1"
    assert error(f"--out={tmp_path / 'a.txt'}", "--language=hindi") == \
        f"error: --out={tmp_path / 'a.txt'}: must end in .jsonl or .jsonl.gz"
    assert error(f"--out={out}", "--language=Hindi") == "error: --language=Hindi: not a language key such as 'hindi'"
    assert not out.exists() and not inside.exists()
    for bad, message in (({"ID": "x", "language": "hindi"}, "record has no text field 'story'"),
                         ({"ID": "x", "story": "नदी"}, "'language' is None, not a language key such as 'hindi'; "
                          "name the corpus's language with --language"),
                         ({"ID": "x", "language": "hindi", "story": "नदी", "synonyms": []},
                          "record already has a 'synonyms' field; augment the original corpus")):
        corpus = write_jsonl(str(tmp_path / "bad.jsonl"), [demo_records("hindi", 1)[0], bad])
        assert error(f"--out={out}") == f"error: {corpus}:2: {message}"


def test_coverage_check_finds_frequent_words_and_word_list_words_without_a_row(tmp_path):
    folder = write_tables(tmp_path, {"hindi": ["नदी\tसरिता", "कुत्ता\tश्वान"]},
                          skip={"hindi": ["# function words and names", "ने", "भोलू"]})
    word_lists = {"nouns": "कुत्ता\tdog\nबिल्ली\tcat", "verbs": "खड़ा होना\tstand up\nभागना\trun",
                  "adjectives": "रंग-बिरंगा\tcolourful\nभूखा\thungry"}
    for kind, text in word_lists.items():
        (tmp_path / "synonyms" / "hindi" / f"{kind}.tsv").write_text(text + "\n", encoding="utf-8")
    corpus = write_jsonl(str(tmp_path / "in.jsonl"), [{"ID": "1", "story": "भोलू ने नदी देखी। नदी में पानी था।"},
                                                        {"ID": "2", "story": "भोलू ने पानी पिया। कुत्ता भूखा था।"}])
    # counted: भोलू 2, ने 2 (both skipped), नदी 2, पानी 2, था 2, then देखी, में, ... once each
    assert uncovered_words("hindi", corpus, top=3, folder=folder) == (["पानी", "था"], ["बिल्ली", "भागना", "भूखा"])
    assert uncovered_words("hindi", corpus, top=1, folder=folder)[0] == []


@pytest.mark.parametrize("language", ["hindi", "marathi", "bangla", "english"])
def test_real_synonym_files_are_well_formed_and_cover_the_corpus(language):
    table, skip = load_synonyms(language)  # the format checks: each bad row is an InputError naming file:line
    assert table and not set(table) & skip
    frequent, listed = uncovered_words(language, os.path.join(ROOT, "data", "demo", f"{language}.jsonl.gz"))
    assert not frequent, f"{len(frequent)} of the 500 most frequent non-skipped words are not keys: {frequent[:30]}"
    assert not listed, f"word-list words that are neither keys nor skipped: {listed[:30]}"


def test_halves_of_hyphen_joined_pairs_are_never_replaced(tmp_path):
    (tmp_path / "tables" / "hindi").mkdir(parents=True)
    (tmp_path / "tables" / "hindi" / "synonyms.tsv").write_text("धीरे\tहौले\nरंग\tवर्ण\n", encoding="utf-8")
    records = [{"ID": "h1", "language": "hindi", "story": "वह धीरे-धीरे चला। धीरे बोलो। रंग-बिरंगे फूल और लाल रंग।"}]
    corpus = write_jsonl(str(tmp_path / "in.jsonl"), records)
    out = tmp_path / "out.jsonl"
    result = run_main(augment_synonyms.main, [f"--input={corpus}", f"--out={out}", "--story_share=1",
                                              "--word_share=1", f"--synonyms_dir={tmp_path / 'tables'}"])
    assert result.returncode == 0, result.stderr
    [record] = [json.loads(line) for line in open(out, encoding="utf-8")]
    assert record["story"] == "वह धीरे-धीरे चला। हौले बोलो। रंग-बिरंगे फूल और लाल वर्ण।"
    assert record["synonyms"] == [["धीरे", "हौले"], ["रंग", "वर्ण"]]
