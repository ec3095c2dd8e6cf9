"""Metric functions of regional_tinystories/metrics.py against values worked out by hand on tiny inputs."""
import math

import pytest
from rouge_score import rouge_scorer

from regional_tinystories import metrics


class PieceTokenizer:
    """A stand-in tokenizer with fixed segmentations: text -> list of pieces (str, or bytes for byte pieces).
    decode joins the pieces' bytes and reads '▁' as a space, dropping the leading one, as SentencePiece does."""

    def __init__(self, segmentations):
        self.segmentations = segmentations
        pieces = sorted({p for seg in segmentations.values() for p in seg}, key=repr)
        self.pieces = ["<unk>", "<bos>", "<eos>"] + pieces
        self.ids = {p: i for i, p in enumerate(self.pieces)}
        self.bos_id, self.eos_id, self.vocab_size = 1, 2, len(self.pieces)

    def encode(self, text):
        return [self.ids[p] for p in self.segmentations[text]]

    def decode(self, ids):
        data = b"".join(p if isinstance(p, bytes) else p.encode() for p in (self.pieces[i] for i in ids))
        return data.decode("utf-8", errors="replace").replace("▁", " ").lstrip(" ")

    def id_to_piece(self, i):
        return self.pieces[i]

    def is_byte_fallback(self, i):
        return isinstance(self.pieces[i], bytes)


# ----------------------------------------------------------------------------- words, distinct-n, ROUGE

def test_words_keep_indic_vowel_signs_and_joiners():
    assert metrics.words("किताबें पढ़ो। 42 बार!") == ["किताबें", "पढ़ो", "42", "बार"]
    assert metrics.words("আমি বাড়ি যাই।") == ["আমি", "বাড়ি", "যাই"]
    assert metrics.words("क्\u200dष, ok") == ["क्\u200dष", "ok"]


def test_distinct_n_on_fixed_strings():
    texts = ["The cat sat.", "the cat ran"]
    # unigrams: the cat sat the cat ran -> 4 distinct of 6; bigrams: the-cat cat-sat the-cat cat-ran -> 3 of 4
    assert metrics.distinct_n(texts, 1) == pytest.approx(4 / 6)
    assert metrics.distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert metrics.distinct_n(texts, 3) == pytest.approx(2 / 2)
    assert metrics.distinct_n(["राम ने आम खाया। राम ने आम खाया।"], 1) == pytest.approx(4 / 8)
    assert math.isnan(metrics.distinct_n(["one"], 2))


def test_rouge2_scores_hindi_where_the_default_tokenizer_scores_zero():
    reference, candidate = "राजा ने महल बनाया।", "राजा ने नया महल बनाया।"
    # bigrams: reference {राजा ने, ने महल, महल बनाया}, candidate {राजा ने, ने नया, नया महल, महल बनाया}: 2 shared
    score = metrics.rouge2(reference, candidate)
    assert score.precision == pytest.approx(2 / 4)
    assert score.recall == pytest.approx(2 / 3)
    assert score.fmeasure == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    default = rouge_scorer.RougeScorer(["rouge2"]).score(reference, candidate)["rouge2"]
    assert default.fmeasure == 0.0  # the problem WordTokenizer fixes
    assert metrics.rouge2("The dog ran home.", "the dog ran away").precision == pytest.approx(2 / 3)


def test_max_rouge2_to_others():
    # "a b c" vs "a b d": one shared bigram of two each -> F1 0.5; "x y z" shares nothing
    assert metrics.max_rouge2_to_others(["a b c", "a b d", "x y z"]) == pytest.approx([0.5, 0.5, 0.0])
    assert math.isnan(metrics.max_rouge2_to_others(["only one"])[0])


def test_completion_of_and_split_at_word_fraction():
    assert metrics.completion_of({"prompt": "Once upon", "story": "Once upon a time."}) == "a time."
    assert metrics.completion_of({"prompt": "Write a story", "story": "A cat."}) == "A cat."
    assert metrics.completion_of({"story": " A cat. "}) == "A cat."
    assert metrics.split_at_word_fraction("a b c d e f g h i j", 0.4) == ("a b c d", "e f g h i j")
    assert metrics.split_at_word_fraction("एक दिन\nएक राजा था", 0.4) == ("एक दिन", "एक राजा था")
    assert metrics.split_at_word_fraction("one", 0.4) == ("one", "")


# ----------------------------------------------------------------------------- Rényi entropy and token statistics

def test_renyi_entropy_of_known_distributions():
    for alpha in metrics.RENYI_ALPHAS:  # uniform over 4 outcomes: 2 bits for every alpha
        assert metrics.renyi_entropy([5, 5, 5, 5], alpha) == pytest.approx(2.0)
    counts = [2, 1, 1, 0]  # p = 1/2, 1/4, 1/4; the zero count does not matter
    assert metrics.renyi_entropy(counts, 1) == pytest.approx(1.5)
    assert metrics.renyi_entropy(counts, 2) == pytest.approx(-math.log2(0.25 + 0.0625 + 0.0625))
    assert metrics.renyi_entropy(counts, 0.5) == pytest.approx(2 * math.log2(math.sqrt(0.5) + 2 * 0.5))
    assert metrics.renyi_entropy(counts, 2.5) == pytest.approx(
        math.log2(0.5 ** 2.5 + 2 * 0.25 ** 2.5) / (1 - 2.5))
    assert metrics.renyi_entropy(counts, 0.999) == pytest.approx(1.5, abs=1e-3)  # tends to Shannon
    with pytest.raises(ValueError):
        metrics.renyi_entropy([0, 0], 2)


def test_tokenization_stats_by_hand():
    tok = PieceTokenizer({"ab cd": ["▁ab", "▁c", "d"], "ab é": ["▁ab", "▁", b"\xc3", b"\xa9"]})
    texts = ["ab cd", "ab é"]
    ids = [tok.encode(texts[0]) + [tok.eos_id], [tok.bos_id] + tok.encode(texts[1])]  # framing is not counted
    s = metrics.tokenization_stats(tok, texts, ids)
    assert (s["tokens"], s["words"], s["chars"], s["bytes"]) == (7, 4, 9, 10)
    assert s["fertility"] == pytest.approx(7 / 4)
    assert s["chars_per_token"] == pytest.approx(9 / 7)
    assert s["bytes_per_token"] == pytest.approx(10 / 7)
    assert s["fallback_share"] == pytest.approx(2 / 7)  # the two byte pieces of é
    assert s["vocab_used"] == 6 and s["vocab_used_share"] == pytest.approx(6 / tok.vocab_size)
    shannon = -(2 / 7 * math.log2(2 / 7) + 5 * (1 / 7) * math.log2(1 / 7))  # ▁ab twice, five pieces once
    assert s["renyi_1"] == pytest.approx(shannon)
    assert s["renyi_1_norm"] == pytest.approx(shannon / math.log2(tok.vocab_size))
    assert s["renyi_2.5"] == pytest.approx(math.log2((2 / 7) ** 2.5 + 5 * (1 / 7) ** 2.5) / (1 - 2.5))


# ----------------------------------------------------------------------------- MorphScore

MORPH_ENTRIES = [("लड़कों", "लड़क", "ों"), ("खेलना", "खेल", "ना"), ("घर", "घ", "र"), ("किताबें", "किताब", "ें"),
                 ("खिलौनों", "खिलौन", "ों")]


def test_token_boundaries_drop_the_marker_piece_and_ignore_splits_inside_a_character():
    # words are tokenized as they appear in running text, after a space
    tok = PieceTokenizer({" किताबें": ["▁", "किताब", "ें"],
                          " खिलौनों": ["▁खिल", b"\xe0", b"\xa5\x8c", "नों"],  # ौ = e0 a5 8c, split in two
                          " लड़कों": [" ", " लड़क", "ों"]})  # byte-level style: the space is part of a piece
    assert metrics.token_boundaries(tok, "किताबें") == (2, {5})
    assert metrics.token_boundaries(tok, "खिलौनों") == (4, {3, 4})
    assert metrics.token_boundaries(tok, "लड़कों") == (2, {4})


def test_morph_score_by_hand():
    tok = PieceTokenizer({
        " लड़कों": ["▁लड़क", "ों"],                       # boundary at 4 = len(stem): hit
        " खेलना": ["▁खे", "लना"],                         # boundary at 2, stem has 3 characters: miss
        " घर": ["▁घर"],                                   # one token: not scored
        " किताबें": ["▁", "किताब", "ें"],                   # lone '▁' dropped; boundary at 5: hit
        " खिलौनों": ["▁खिल", b"\xe0", b"\xa5\x8c", "नों"],  # boundaries 3 and 4, stem has 5: miss
    })
    result = metrics.morph_score(tok, MORPH_ENTRIES)
    assert result == {"morph_score": 2 / 4, "n_scored": 4, "n_words": 5, "split_share": 4 / 5}


def test_morph_score_tokenizes_the_in_text_form_of_a_word(tmp_path):
    from regional_tinystories import tokenizer as tk
    tok = tk.train_tokenizer(tk.parse_name("bpe:400"), ["राम और लड़कों ने खेलना शुरू किया।"] * 50, str(tmp_path))
    # enough merges to learn every word of the sentence whole, but only in its in-text form " लड़कों"
    assert len(tok.encode("लड़कों")) > 1 and len(tok.encode(" लड़कों")) == 1
    assert metrics.token_boundaries(tok, "लड़कों") == (1, set())  # one token: MorphScore leaves it out


def test_read_morph_list_formats_and_errors(tmp_path):
    ours = tmp_path / "hindi.csv"
    ours.write_text("word,stem,suffix\nलड़कों,लड़क,ों\nखेलना,खेल,ना\n", encoding="utf-8")
    assert metrics.read_morph_list(str(ours)) == [("लड़कों", "लड़क", "ों"), ("खेलना", "खेल", "ना")]
    seed_style = tmp_path / "seed.csv"
    seed_style.write_text("index,full_word,pt1,rest\n0,आना,आ,ना\n", encoding="utf-8")
    assert metrics.read_morph_list(str(seed_style)) == [("आना", "आ", "ना")]
    bad = tmp_path / "bad.csv"
    bad.write_text("word,stem,suffix\nआना,आ,ना\nमनोहर,मनो,रम\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.csv:3: word 'मनोहर' is not stem"):
        metrics.read_morph_list(str(bad))
    headerless = tmp_path / "headerless.csv"
    headerless.write_text("a,b,c\n", encoding="utf-8")
    with pytest.raises(ValueError, match="header must have columns word,stem,suffix"):
        metrics.read_morph_list(str(headerless))


# ----------------------------------------------------------------------------- lexicon hit rate

def test_lexicon_hit_rate_with_a_word_list(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("राम\nआम\nবা\u09dcি\n", encoding="utf-8")  # the Bangla word with the precomposed letter ড়
    lexicon = metrics.Lexicon(str(words))
    # राम, ने, आम, खाया are words; 42 has no letter and is left out: 2 of 4 known
    assert metrics.lexicon_hit_rate(["राम ने आम खाया 42"], lexicon) == pytest.approx(0.5)
    assert "বা\u09a1\u09bcি" in lexicon  # NFC spells ড় as ড + nukta; the lookup also tries the precomposed letter
    assert math.isnan(metrics.lexicon_hit_rate(["123 ..."], lexicon))


def test_lexicon_reads_hunspell_affix_rules(tmp_path):
    pytest.importorskip("hunspell", reason="chunspell (the Hunspell reader) is not installed")
    (tmp_path / "xx.aff").write_text("SET UTF-8\nSFX A Y 1\nSFX A 0 ों .\n", encoding="utf-8")
    (tmp_path / "xx.dic").write_text("1\nलड़क/A\n", encoding="utf-8")
    lexicon = metrics.Lexicon(str(tmp_path / "xx.dic"))
    assert "लड़क" in lexicon and "लड़कों" in lexicon  # the second only through the suffix rule
    assert "लड़की" not in lexicon
    assert metrics.lexicon_hit_rate(["लड़कों लड़की"], lexicon) == pytest.approx(0.5)


def test_missing_dictionary_is_a_clear_error(tmp_path):
    with pytest.raises(metrics.LexiconError, match="nope.dic: not found"):
        metrics.Lexicon(str(tmp_path / "nope.dic"))
    with pytest.raises(metrics.LexiconError, match="nope.txt: not found"):
        metrics.Lexicon(str(tmp_path / "nope.txt"))
    assert metrics.default_dictionary("hindi") == ("/usr/share/hunspell/hi_IN.dic", "hunspell-hi")
    assert metrics.default_dictionary("klingon") == (None, None)


# ----------------------------------------------------------------------------- confidence intervals and reporting

def test_mean_ci95_uses_student_t():
    mean, half = metrics.mean_ci95([1, 2, 3, 4, 5])
    # sd = sqrt(2.5), t(0.975, df=4) = 2.776445 from the table
    assert mean == 3.0
    assert half == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-5)
    assert metrics.mean_ci95([6, 7, 8])[1] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert math.isnan(metrics.mean_ci95([7])[1]) and metrics.mean_ci95([7])[0] == 7
    assert all(math.isnan(v) for v in metrics.mean_ci95([]))


def test_reporting_helpers():
    assert metrics.language_in("out/demo-hindi-sp4k") == "hindi"
    assert metrics.language_in("bengali_poems") == "bangla"
    assert metrics.language_in("tinystories") is None
    assert metrics.run_name("out/runs/x/ckpt_best.pt") == "x" and metrics.run_name("out/runs/x/") == "x"
    assert metrics.fmt(None) == metrics.fmt(float("nan")) == "—"
    assert metrics.fmt(1234) == "1,234" and metrics.fmt(0.12345) == "0.123"
    assert metrics.markdown_table(["a", "b"], [(1, "x")]) == "| a | b |\n|---|---|\n| 1 | x |\n"
    assert metrics.without_nan({"a": float("nan"), "b": 1.0}) == {"a": None, "b": 1.0}
