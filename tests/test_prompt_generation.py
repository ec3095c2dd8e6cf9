"""Tests for prompting/generate_prompts.py, templates.py and languages.py (no network, no real word lists needed)."""
import json
import os

import pytest
from helpers import load_script

from regional_tinystories.languages import (
    PROMPT_GEN_DIR,
    clean_text,
    ends_like_a_sentence,
    load_language,
    script_share,
)
from regional_tinystories.templates import BUILTIN_TEMPLATES, fill_story_template

generate_prompts = load_script("prompting/generate_prompts.py")
from regional_tinystories.languages import read_word_list
sample_combinations = generate_prompts.sample_combinations

LANGUAGES = ("hindi", "marathi", "bangla", "english")
RECORD_FIELDS = ["ID", "language", "noun", "verb", "adjective", "ending", "template", "prompt"]


def write_word_lists(folder, nouns=3, verbs=2, adjectives=2, endings=2):
    """Tiny word lists: noun0..nounN etc., each with an English gloss."""
    os.makedirs(folder, exist_ok=True)
    for kind, count in (("nouns", nouns), ("verbs", verbs), ("adjectives", adjectives), ("endings", endings)):
        with open(os.path.join(folder, f"{kind}.tsv"), "w", encoding="utf-8") as f:
            f.writelines(f"{kind}{i}\t{kind}-gloss{i}\n" for i in range(count))
    return str(folder)


def read_shards(out_dir):
    records = []
    for name in sorted(os.listdir(out_dir)):
        with open(os.path.join(out_dir, name), encoding="utf-8") as f:
            records += [json.loads(line) for line in f]
    return records


def run_generate(capsys, *argv):
    generate_prompts.main([str(a) for a in argv])
    return capsys.readouterr().out


# --- sampling -----------------------------------------------------------------------------------

def test_sampling_at_the_combination_limit_uses_every_combination_once():
    sizes = [3, 2, 2, 5]
    picks = list(sample_combinations(sizes, 60, seed=1))
    assert len(set(picks)) == 60
    assert set(picks) == {(n, v, a, e) for n in range(3) for v in range(2) for a in range(2) for e in range(5)}


def test_asking_for_more_prompts_than_combinations_fails_clearly():
    with pytest.raises(ValueError, match=r"asked for 61 prompts .* only 60 unique combinations "
                                         r"\(3 nouns x 2 verbs x 2 adjectives x 5 endings\)"):
        sample_combinations([3, 2, 2, 5], 61, seed=1)


def test_sampling_is_reproducible_and_depends_on_the_seed():
    sizes = [50, 40, 30, 20]
    assert list(sample_combinations(sizes, 100, seed=7)) == list(sample_combinations(sizes, 100, seed=7))
    assert list(sample_combinations(sizes, 100, seed=7)) != list(sample_combinations(sizes, 100, seed=8))


def test_ids_cannot_collide_the_way_joined_indices_do(tmp_path, capsys):
    # With 13 nouns and 24 verbs, joining indices without a separator makes (1, 23) and (12, 3)
    # both "123"; drawing every combination must still give distinct IDs.
    words = write_word_lists(tmp_path / "words", nouns=13, verbs=24, adjectives=1, endings=1)
    run_generate(capsys, "--language", "english", "--num_prompts", 312, "--words_dir", words,
                 "--out", tmp_path / "out")
    records = read_shards(tmp_path / "out")
    assert len(records) == 312
    assert len({r["ID"] for r in records}) == 312
    assert len({(r["noun"], r["verb"], r["adjective"], r["ending"]) for r in records}) == 312
    assert {"english-2+-1-23-0-0", "english-2+-12-3-0-0"} <= {r["ID"] for r in records}


# --- the command line ---------------------------------------------------------------------------

def test_sharded_output_has_the_record_format_and_stable_ids(tmp_path, capsys):
    words = write_word_lists(tmp_path / "words")
    out = run_generate(capsys, "--language", "hindi", "--template", "3", "--num_prompts", 24, "--shards", 5,
                       "--seed", 3, "--words_dir", words, "--out", tmp_path / "five")
    assert "wrote 24 prompts" in out
    names = sorted(os.listdir(tmp_path / "five"))
    assert names == [f"hindi-3-{i:03d}.jsonl" for i in range(5)]
    five = read_shards(tmp_path / "five")
    assert all(list(record) == RECORD_FIELDS for record in five)
    assert len({r["ID"] for r in five}) == 24
    record = five[0]
    noun_i, verb_i, adjective_i, ending_i = map(int, record["ID"].split("-")[2:])
    assert record["ID"].startswith("hindi-3-") and record["template"] == "3" and record["language"] == "hindi"
    assert (record["noun"], record["verb"], record["adjective"]) == (f"nouns{noun_i}", f"verbs{verb_i}",
                                                                     f"adjectives{adjective_i}")
    assert record["ending"] == f"endings-gloss{ending_i}"  # English endings by default
    assert f'"{record["noun"]}"' in record["prompt"] and "Hindi" in record["prompt"]

    # The same seed gives the same prompts in the same order, whatever the shard count.
    run_generate(capsys, "--language", "hindi", "--template", "3", "--num_prompts", 24, "--shards", 1,
                 "--seed", 3, "--words_dir", words, "--out", tmp_path / "one")
    assert read_shards(tmp_path / "one") == five
    assert not [name for name in os.listdir(tmp_path / "one") if name.endswith(".tmp")]

    # Rewriting the five-shard folder with fewer shards would leave stale duplicates behind: refused.
    with pytest.raises(SystemExit, match="holds shards this run would not overwrite .*hindi-3-002.jsonl"):
        generate_prompts.main(["--language", "hindi", "--template", "3", "--num_prompts", "24", "--shards", "2",
                               "--words_dir", words, "--out", str(tmp_path / "five")])


def test_native_endings_and_bangla_script(tmp_path, capsys):
    words = write_word_lists(tmp_path / "words")
    run_generate(capsys, "--language", "bangla", "--template", "1", "--num_prompts", 4, "--ending_language",
                 "native", "--words_dir", words, "--out", tmp_path / "out")
    records = read_shards(tmp_path / "out")
    assert all(r["ending"].startswith("endings") and "gloss" not in r["ending"] for r in records)
    assert all("Bengali script" in r["prompt"] and "Devanagari" not in r["prompt"] for r in records)


def test_user_template_file(tmp_path, capsys):
    words = write_word_lists(tmp_path / "words")
    template = tmp_path / "fable.txt"
    template.write_text('Tell a $language fable ($script) about a $adjective $noun who likes to $verb. '
                        'Example reply: {"story": "..."} costs $$0.', encoding="utf-8")
    run_generate(capsys, "--language", "marathi", "--template_file", template, "--num_prompts", 3,
                 "--words_dir", words, "--out", tmp_path / "out")
    record = read_shards(tmp_path / "out")[0]
    assert record["template"] == "fable" and record["ID"].startswith("marathi-fable-")
    assert record["prompt"].startswith(f"Tell a Marathi fable (Devanagari) about a {record['adjective']} "
                                       f"{record['noun']} who likes to {record['verb']}.")
    assert '{"story": "..."} costs $0.' in record["prompt"]


@pytest.mark.parametrize("setup, argv, message", [
    (None, ["--num_prompts", "25"], "asked for 25 prompts but the word lists allow only 24"),
    (None, ["--num_prompts", "4", "--language", "klingon"], "unknown language 'klingon'"),
    (None, ["--num_prompts", "4", "--shards", "5"], "--shards between 1 and --num_prompts"),
    ("no_tab", ["--num_prompts", "4"], "nouns.tsv:2: expected 'word<TAB>english gloss'"),
    ("duplicate", ["--num_prompts", "4"], "verbs.tsv:2: duplicate word 'verbs0' (first on line 1)"),
    ("missing", ["--num_prompts", "4"], "word list not found: "),
    ("bad_template", ["--num_prompts", "4", "--template_file", "TEMPLATE"], "unknown placeholder $animal"),
])
def test_bad_input_gives_one_clear_error_line(tmp_path, capsys, setup, argv, message):
    words = write_word_lists(tmp_path / "words")
    if setup == "no_tab":
        (tmp_path / "words" / "nouns.tsv").write_text("dog\tdog\ncat\n", encoding="utf-8")
    elif setup == "duplicate":
        (tmp_path / "words" / "verbs.tsv").write_text("verbs0\tx\nverbs0\ty\n", encoding="utf-8")
    elif setup == "missing":
        os.remove(tmp_path / "words" / "endings.tsv")
    (tmp_path / "t.txt").write_text("A story about a $animal.", encoding="utf-8")
    argv = [str(tmp_path / "t.txt") if a == "TEMPLATE" else a for a in argv]
    if "--language" not in argv:
        argv += ["--language", "english"]
    with pytest.raises(SystemExit) as exit_info:
        generate_prompts.main(argv + ["--words_dir", words, "--out", str(tmp_path / "out")])
    assert str(exit_info.value.code).startswith("error: ")
    assert message in str(exit_info.value.code)
    assert "\n" not in str(exit_info.value.code)


def test_old_hyphenated_options_still_work_with_a_deprecation_note(tmp_path, capsys):
    words = write_word_lists(tmp_path / "words")
    generate_prompts.main(["--language", "hindi", "--num-prompts", "4", "--words-dir", words,
                           "--ending-language=native", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert "wrote 4 prompts" in captured.out
    assert all(r["ending"].startswith("endings") and "gloss" not in r["ending"] for r in read_shards(tmp_path / "out"))
    assert [line for line in captured.err.splitlines() if line.startswith("note:")] == [
        f"note: --{old} is deprecated, use --{old.replace('-', '_')} (the old spelling will be removed in a later "
        "release)" for old in ("num-prompts", "words-dir", "ending-language")]


def test_a_word_list_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "nouns.tsv"
    path.write_bytes("सेब\tapple\n".encode() + b"\xff\tbad\n")
    with pytest.raises(ValueError, match=r"nouns.tsv:2: not UTF-8 text \(byte 16 of the file\)"):
        read_word_list(str(path))


def test_read_word_list_normalises_and_skips_blank_lines(tmp_path):
    path = tmp_path / "nouns.tsv"
    # "क़" written as क + nukta must come back in NFC (which keeps this pair decomposed).
    path.write_text(" सेब \tapple\n\n\u0915\u093c\u0932\u092e\tpen\n", encoding="utf-8")
    assert read_word_list(str(path)) == [("सेब", "apple"), ("\u0915\u093c\u0932\u092e", "pen")]


# --- templates and languages --------------------------------------------------------------------

@pytest.mark.parametrize("language_key", LANGUAGES)
def test_every_builtin_template_fills_for_every_language(language_key):
    language = load_language(language_key)
    assert set(BUILTIN_TEMPLATES) == {"1", "2", "2+", "3", "4", "4+", "5"}
    for name, text in BUILTIN_TEMPLATES.items():
        prompt = fill_story_template(text, language, "N", "V", "A", "E")
        assert "$" not in prompt, name
        assert language.name in prompt and language.script in prompt
        assert '"N"' in prompt and '"V"' in prompt and '"A"' in prompt
        assert prompt.endswith('{"story": "the story text"}')
    assert "350 to 500 words" in BUILTIN_TEMPLATES["2+"] and "200 to 300 words" in BUILTIN_TEMPLATES["2"]
    assert language.story_traditions in fill_story_template(BUILTIN_TEMPLATES["4"], language, "N", "V", "A", "E")


def test_language_entries():
    for key in LANGUAGES:
        language = load_language(key)
        assert language.key == key
        assert language.sentence_end
    assert load_language("bangla").script == "Bengali"
    assert "\u0995" in load_language("bangla").script_chars and "\u0915" not in load_language("bangla").script_chars
    assert "\u0915" in load_language("hindi").script_chars
    assert "।" in load_language("bangla").script_chars  # Bangla writes the Devanagari danda


def test_script_share():
    assert script_share("एक दिन 12 बजे!", "hindi") == 1.0
    assert script_share("एक दिन", "bangla") == 0.0
    assert script_share("abc एक", "hindi") == pytest.approx(2 / 5)  # ए + क vs a, b, c
    assert script_share("১২ ... !", "bangla") == 0.0  # no letters at all
    assert script_share("Once upon a time, Zoë smiled.", "english") == 1.0


def test_clean_text_keeps_what_indic_text_needs_and_drops_stray_script():
    zwnj, zwj = "\u200c", "\u200d"
    text = f"राम (Ram) ने “नमस्ते” कहा।  उसके पास २ और 3 आम 😀 थे।\r\nक्{zwj}ष और र्{zwnj}य"
    cleaned = clean_text(text, "hindi")
    assert cleaned == f"राम ने “नमस्ते” कहा। उसके पास २ और 3 आम थे।\nक्{zwj}ष और र्{zwnj}य"
    # Decomposed input comes out NFC.
    assert clean_text("e\u0301te\u0301.", "english") == "\u00e9t\u00e9."
    # Bangla keeps its own letters and the danda, drops Devanagari letters.
    assert clean_text("আমি ভাত খাই। राम", "bangla") == "আমি ভাত খাই।"


def test_ends_like_a_sentence():
    assert ends_like_a_sentence('He said, "Let\'s go!"', "english")
    assert ends_like_a_sentence("घर गया।\u200d ", "hindi")
    assert ends_like_a_sentence("तो घरी गेला.", "marathi")
    assert not ends_like_a_sentence("and then the", "english")


# --- the project's own word lists, once they exist ----------------------------------------------

MINIMUM_COUNTS = {"nouns": 150, "verbs": 100, "adjectives": 100, "endings": 20}


@pytest.mark.parametrize("language_key", LANGUAGES)
def test_real_word_lists_meet_the_minimum_counts(language_key):
    folder = os.path.join(PROMPT_GEN_DIR, language_key)
    paths = {kind: os.path.join(folder, f"{kind}.tsv") for kind in MINIMUM_COUNTS}
    if not all(os.path.exists(path) for path in paths.values()):
        pytest.skip(f"word lists for {language_key} not written yet")
    language = load_language(language_key)
    for kind, path in paths.items():
        entries = read_word_list(path)  # also rejects malformed lines and duplicates
        assert len(entries) >= MINIMUM_COUNTS[kind], f"{path}: {len(entries)} entries"
        words = " ".join(word for word, _ in entries)
        assert script_share(words, language) >= 0.99, f"{path}: words not in {language.script}"
