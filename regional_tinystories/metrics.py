"""
Metric functions shared by the analysis scripts in scripts/ (compare_tokenizers, story_metrics, results_table, ...).

The metrics are plain functions of texts, token ids or numbers, so each can be tested on tiny inputs against
hand-computed values; reading the inputs and writing reports is left to the scripts.

  words, distinct_n                 word n-gram diversity, for any script
  word_stem, uses_word              is a word-list word used in a text, inflected forms included
  completion_of, split_at_word_...  what a model wrote after its prompt; a story cut for the memorisation test
  rouge2, max_rouge2_to_others      ROUGE-2 from the rouge-score library with an Indic-aware word tokenizer
  near_duplicate_pairs              pairs of texts over a ROUGE-2 F1 threshold, fast enough for whole corpora
  chrf, bleu                        sacrebleu's corpus chrF and BLEU against references (model vs original text)
  bertscore_f1                      BERTScore F1 with a local multilingual encoder the user names
  renyi_entropy, tokenization_stats tokenizer fertility, compression, byte fallback, vocabulary use, Rényi entropy
  read_morph_list, morph_score      agreement of token boundaries with morpheme boundaries (MorphScore)
  Lexicon, lexicon_hit_rate         share of words a Hunspell / aspell dictionary knows
  mean_ci95                         mean and half-width of its 95% confidence interval
  read_rating_records, read_ratings judge rating files (this project's and the original's eval-*.json) -> ratings
  score_summary                     n, mean, median, sd and 95% CI half-width of scores
  paired_comparison, unpaired_z_test  two models on the same prompts: bootstrap CI and Wilcoxon; the original's z-test
  language_in, run_name, fmt, ...   small helpers for the scripts' tables
"""
import csv
from collections import Counter, defaultdict
import math
import os
import subprocess
import unicodedata

import numpy as np
import regex
from rouge_score import rouge_scorer
from scipy import stats

from regional_tinystories.files import DataError, atomic_write, input_files, read_input_records
from regional_tinystories.replies import SCORE_FIELDS

# ----------------------------------------------------------------------------- words and n-grams

# Letters, combining marks (Indic vowel signs and viramas are marks, not letters), digits, and the zero-width
# (non-)joiners that Indic spelling needs inside a word. Everything else (spaces, punctuation, danda) separates.
WORD_PATTERN = regex.compile(r"[\p{L}\p{M}\p{N}\u200c\u200d]+")


def words(text):
    """The words of a text in any script, in order."""
    return WORD_PATTERN.findall(text)


class WordTokenizer:
    """rouge-score's tokenizer interface (tokenize(text) -> list of str), lowercased words of any script.
    rouge-score's default tokenizer keeps only [a-z0-9] and so turns every Hindi or Bangla story into nothing."""

    def tokenize(self, text):
        return words(text.lower())


def ngrams(tokens, n):
    return list(zip(*(tokens[i:] for i in range(n))))


def distinct_n(texts, n):
    """Distinct n-grams / all n-grams, pooled over all texts (Li et al. 2016). Words are lowercased.
    NaN when the texts hold no n-gram at all."""
    seen, total = set(), 0
    for text in texts:
        grams = ngrams(WordTokenizer().tokenize(text), n)
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else float("nan")


# Infinitive endings of the word lists' verbs: खेलना, खेळणे, খেলা / দৌড়ানো. Cut before matching, so that the
# conjugated forms (खेली, खेळला, খেলল, দৌড়াল) still count.
# Hindi also drops a perfective -या (खोया हुआ -> खो, for खो गया, खोई) and a final आ (कछुआ -> कछु, for कछुए).
INFINITIVE_ENDINGS = {"hindi": ("ना", "या", "आ"), "marathi": ("णे", "णं"), "bangla": ("ানো", "ওয়া", "া")}
# Verbs whose stem changes: देना -> दिया, लेना -> लिया
IRREGULAR_STEMS = {"hindi": {"देना": ("दे", "दि"), "लेना": ("ले", "लि")}}


def word_stem(word, language):
    """The prefix that every inflected form of a single word starts with, by a documented rule (no dictionary):
    without an infinitive ending, without its final vowel signs / virama (बिल्ली -> बिल्ल, covering बिल्लियाँ,
    बिल्ली को; छोटा -> छोट for छोटी, छोटे); at least two characters are kept. English: lowercased, a final e or y
    dropped when three letters remain (paddle -> paddl for paddled, paddling). Irregular forms (Marathi मुलगी ->
    मुलीला, English fly -> flew) are missed."""
    first = word.lower()
    if language == "english":
        return first[:-1] if first.endswith(("e", "y")) and len(first) > 3 else first
    for ending in INFINITIVE_ENDINGS.get(language, ()):
        if first.endswith(ending) and len(first) - len(ending) >= 2:
            first = first[:-len(ending)]
            break
    while len(first) > 2 and unicodedata.category(first[-1]).startswith("M"):
        first = first[:-1]
    return first


def uses_word(text, word, language):
    """True when text uses a word-list entry, inflected or not: some word of text starts with its stem. Of a
    multi-word entry the first word counts (खड़ा होना, उडी मारणे: the helper verb inflects freely); of a hyphenated
    compound every part (रंग-बिरंगा -> रंग + बिरंग)."""
    text_words = words(text.lower())
    head = word.split()[0] if word.split() else word
    parts = [part for part in head.split("-") if part]
    if language == "english":  # short English words prefix many others (win, window): allow only inflections
        return all(any(english_inflection_of(w, part.lower()) for w in text_words) for part in parts)
    irregular = IRREGULAR_STEMS.get(language, {})
    stems = [irregular.get(part, (word_stem(part, language),)) for part in parts]
    return all(any(w.startswith(stem) for w in text_words for stem in options) for options in stems)


ENGLISH_SUFFIXES = ("", "s", "es", "d", "ed", "ing", "er", "ers", "est", "ly", "ies", "ied", "ier", "iest", "ily")
# The irregular past forms of the word lists' verbs (a regular ending is found by rule)
ENGLISH_IRREGULAR = {"throw": ("threw", "thrown"), "forget": ("forgot", "forgotten"), "stand": ("stood",),
                     "sleep": ("slept",), "lose": ("lost",), "shine": ("shone",), "ring": ("rang", "rung"),
                     "win": ("won",), "run": ("ran",), "swim": ("swam", "swum"), "sing": ("sang", "sung"),
                     "eat": ("ate", "eaten"), "fly": ("flew", "flown", "flies"), "find": ("found",),
                     "give": ("gave", "given"), "take": ("took", "taken"), "see": ("saw", "seen"),
                     "catch": ("caught",), "bring": ("brought",), "think": ("thought",), "buy": ("bought",),
                     "make": ("made",), "build": ("built",), "fall": ("fell", "fallen"), "hide": ("hid", "hidden"),
                     "ride": ("rode", "ridden"), "draw": ("drew", "drawn"), "grow": ("grew", "grown"),
                     "sit": ("sat",), "tell": ("told",), "hold": ("held",), "keep": ("kept",), "feel": ("felt",),
                     "go": ("went", "gone"), "come": ("came",), "dig": ("dug",), "feed": ("fed",), "wake": ("woke",),
                     "write": ("wrote", "written"), "drink": ("drank", "drunk"), "break": ("broke", "broken"),
                     "blow": ("blew", "blown"), "shake": ("shook", "shaken"), "teach": ("taught",), "leave": ("left",),
                     "meet": ("met",), "spin": ("spun",), "sweep": ("swept",), "climb": (), "read": ()}


def english_inflection_of(text_word, word):
    """text_word is word with a regular English ending (paddle -> paddled, win -> winning, happy -> happier) or one
    of its irregular forms (throw -> threw)."""
    if text_word in ENGLISH_IRREGULAR.get(word, ()):
        return True
    for base in {word, word_stem(word, "english"), word + word[-1:]}:  # paddl(ed), win(n)ing
        if text_word.startswith(base) and text_word[len(base):] in ENGLISH_SUFFIXES:
            return True
    return False


def completion_of(record):
    """What a model wrote: a sample.py record's story starts with its prompt, which the model did not write.
    Records whose story does not start with their prompt (corpus records keep the LLM instruction there) are
    returned whole."""
    story, prompt = record["story"], record.get("prompt") or ""
    return story[len(prompt):].strip() if prompt and story.startswith(prompt) else story.strip()


def split_at_word_fraction(text, fraction):
    """(beginning, rest) of a text cut before the word at `fraction` of its whitespace-separated words,
    e.g. 0.4 for the seed's memorisation test: prompt with the first 40%, compare the completion with the rest."""
    starts = [m.start() for m in regex.finditer(r"\S+", text)]
    k = math.ceil(fraction * len(starts))
    if k >= len(starts):
        return text.strip(), ""
    return text[:starts[k]].rstrip(), text[starts[k]:].strip()


# ----------------------------------------------------------------------------- ROUGE-2

ROUGE2_SCORER = rouge_scorer.RougeScorer(["rouge2"], tokenizer=WordTokenizer())


def rouge2(reference, candidate):
    """rouge-score's Score(precision, recall, fmeasure) of candidate's word bigrams against reference's."""
    return ROUGE2_SCORER.score(reference, candidate)["rouge2"]


def max_rouge2_to_others(texts):
    """For each text, the highest ROUGE-2 F1 against any other text of the list (seed 004, Figure 6): near 1 means
    the model keeps producing the same story. Cost grows with len(texts)**2."""
    if len(texts) < 2:
        return [float("nan")] * len(texts)
    return [ROUGE2_SCORER.score_multi(texts[:i] + texts[i + 1:], text)["rouge2"].fmeasure
            for i, text in enumerate(texts)]


def near_duplicate_pairs(texts, threshold=0.5):
    """[(i, j, ROUGE-2 F1)] for every pair of texts whose ROUGE-2 F1 exceeds threshold, for corpora of thousands of
    stories. ROUGE-2's overlap of a pair, the sum over shared bigrams of the smaller count, is at most the smaller of
    the two "counts of my bigrams that the other has" — one sparse product gives those for all pairs — so only pairs
    whose bound reaches the threshold are scored exactly with rouge-score."""
    from scipy import sparse

    vocabulary, rows, cols, counts, totals = {}, [], [], [], []
    for i, text in enumerate(texts):
        grams = Counter(ngrams(WordTokenizer().tokenize(text), 2))
        totals.append(sum(grams.values()))
        for gram, count in grams.items():
            rows.append(i)
            cols.append(vocabulary.setdefault(gram, len(vocabulary)))
            counts.append(count)
    shape = (len(texts), max(len(vocabulary), 1))
    count_matrix = sparse.csr_matrix((np.asarray(counts, dtype=np.float64), (rows, cols)), shape=shape)
    presence = (count_matrix > 0).astype(np.float64)
    mine_in_theirs = (count_matrix @ presence.T).toarray()  # [i, j]: how many of i's bigrams j also has
    bound = np.minimum(mine_in_theirs, mine_in_theirs.T)
    totals = np.asarray(totals, dtype=np.float64)
    f_bound = 2 * bound / np.maximum(totals[:, None] + totals[None, :], 1)
    pairs = []
    for i, j in zip(*np.nonzero(np.triu(f_bound > threshold, k=1))):
        f = rouge2(texts[i], texts[j]).fmeasure
        if f > threshold:
            pairs.append((int(i), int(j), float(f)))
    return pairs


# ----------------------------------------------------------------------------- chrF and BLEU

def chrf(references, hypotheses):
    """Corpus chrF (0-100) of hypotheses against references, one reference each, from sacrebleu: character n-gram
    F-score, which needs no word tokenizer and so works for Devanagari and Bengali as for English."""
    import sacrebleu  # imported here: only reference comparisons need it

    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score)


def bleu(references, hypotheses):
    """Corpus BLEU (0-100) from sacrebleu with its 'intl' tokenizer, which splits off Unicode punctuation (the danda
    too); the default '13a' tokenizer knows only ASCII punctuation and would glue । to the word before it."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize="intl").score)


def bertscore_f1(references, hypotheses, model_dir, layer=-1, batch_size=16):
    """Mean BERTScore F1 (Zhang et al. 2020; no idf weighting, no baseline rescaling) of each hypothesis against its
    reference, with a local Hugging Face encoder: both texts are embedded (hidden states of `layer`, special tokens
    left out), every token is matched to its most similar token of the other text (cosine), precision and recall are
    the mean best similarities of the hypothesis' and the reference's tokens. Only as good as the encoder is for the
    language: give a multilingual one that knows it (MuRIL, IndicBERT, XLM-R); an English BERT cuts Devanagari and
    Bengali into unknown pieces and bytes, and its similarities mean nothing."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()

    def embeddings(texts):
        vectors = []
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                              return_tensors="pt", return_special_tokens_mask=True)
            special = batch.pop("special_tokens_mask").bool()
            with torch.no_grad():
                hidden = model(**batch, output_hidden_states=True).hidden_states[layer]
            keep = batch["attention_mask"].bool() & ~special
            vectors += [torch.nn.functional.normalize(h[k].float(), dim=-1) for h, k in zip(hidden, keep)]
        return vectors

    scores = []
    for ref, hyp in zip(embeddings(references), embeddings(hypotheses)):
        if len(ref) == 0 or len(hyp) == 0:
            scores.append(0.0)
            continue
        similarity = hyp @ ref.T
        precision, recall = similarity.max(1).values.mean(), similarity.max(0).values.mean()
        scores.append(float(2 * precision * recall / (precision + recall)) if precision + recall > 0 else 0.0)
    return float(np.mean(scores))


# ----------------------------------------------------------------------------- token statistics

RENYI_ALPHAS = (0.5, 1.0, 2.0, 2.5)  # 2.5 is the value the seed reports


def renyi_entropy(counts, alpha):
    """Rényi entropy in bits of the distribution given by counts: log2(sum p**alpha) / (1 - alpha).
    alpha = 1 is its limit, Shannon entropy. Zero counts do not contribute."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.sum() <= 0:
        raise ValueError("Rényi entropy of an empty distribution")
    p = counts[counts > 0] / counts.sum()
    if alpha == 1:
        return float(-(p * np.log2(p)).sum())
    return float(np.log2((p ** alpha).sum()) / (1 - alpha))


def is_fallback_token(tok, token_id):
    """A byte-fallback piece, or the unknown piece: text the vocabulary could not cover with a real subword."""
    return tok.is_byte_fallback(token_id) or tok.id_to_piece(token_id) == "<unk>"


def tokenization_stats(tok, texts, ids_per_text):
    """Compression and vocabulary statistics of one tokenizer on some texts, given each text's token ids.

    fertility is tokens per word (words as in words(): punctuation tokens count as tokens, not as words).
    bos and eos are left out of every count. Rényi entropies are in bits; *_norm divides by log2 of the
    vocabulary size, the largest value possible, so tokenizers of different sizes can be compared.
    """
    n_words = n_chars = n_bytes = 0
    all_ids = []
    for text, ids in zip(texts, ids_per_text):
        n_words += len(words(text))
        n_chars += len(text)
        n_bytes += len(text.encode("utf-8"))
        all_ids.append(np.asarray(ids, dtype=np.int64))
    all_ids = np.concatenate(all_ids) if all_ids else np.zeros(0, dtype=np.int64)
    size = max(tok.vocab_size, int(all_ids.max()) + 1 if len(all_ids) else 0)
    counts = np.bincount(all_ids, minlength=size)
    counts[[tok.bos_id, tok.eos_id]] = 0
    n_tokens = int(counts.sum())
    if n_tokens == 0:
        raise ValueError(f"tokenizer produced no tokens for {len(texts)} texts")
    used = np.flatnonzero(counts)
    fallback = sum(int(counts[i]) for i in used if is_fallback_token(tok, int(i)))
    stats = {"vocab_size": tok.vocab_size, "tokens": n_tokens, "words": n_words, "chars": n_chars, "bytes": n_bytes,
             "fertility": n_tokens / n_words if n_words else float("nan"),
             "chars_per_token": n_chars / n_tokens, "bytes_per_token": n_bytes / n_tokens,
             "fallback_share": fallback / n_tokens,
             "vocab_used": len(used), "vocab_used_share": len(used) / tok.vocab_size}
    for alpha in RENYI_ALPHAS:
        h = renyi_entropy(counts, alpha)
        stats[f"renyi_{alpha:g}"] = h
        stats[f"renyi_{alpha:g}_norm"] = h / math.log2(tok.vocab_size)
    return stats


# ----------------------------------------------------------------------------- MorphScore

def read_morph_list(path, skipped=None):
    """[(word, stem, suffix)] from a CSV with header word,stem,suffix (the seed's full_word,pt1,rest also works).
    Text is NFC-normalised; each word must be exactly stem + suffix, both non-empty: a row that is not raises
    ValueError naming path:line, or, given a list `skipped`, is left out and its reason appended to the list (the
    original Regional-TinyStories' lists hold such rows)."""
    columns = (("word", "stem", "suffix"), ("full_word", "pt1", "rest"))
    entries = []
    with open(path, encoding="utf-8", newline="") as f:
        try:
            reader = csv.DictReader(f)
            names = next((c for c in columns if set(c) <= set(reader.fieldnames or ())), None)
            if names is None:
                raise ValueError(f"{path}:1: header must have columns word,stem,suffix (found {reader.fieldnames})")
            for row in reader:
                word, stem, suffix = (unicodedata.normalize("NFC", (row[c] or "").strip()) for c in names)
                if not stem or not suffix or word != stem + suffix:
                    problem = f"{path}:{reader.line_num}: word {word!r} is not stem {stem!r} + suffix {suffix!r}"
                    if skipped is None:
                        raise ValueError(problem)
                    skipped.append(problem)
                    continue
                entries.append((word, stem, suffix))
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 text") from None
    if not entries:
        skipped_note = f" ({len(skipped)} inconsistent rows skipped)" if skipped else ""
        raise ValueError(f"{path}: no words in it{skipped_note}")
    return entries


def token_boundaries(tok, word):
    """(number of tokens, character offsets inside word where one token ends and the next begins).

    The word is tokenized alone, in the form it has inside running text: after a space (' ' + word). SentencePiece
    marks that space with its own '▁' either way, and byte-level BPE and tiktoken learned their merges on
    space-prefixed words, so the bare word would be a form they rarely see. Pieces that decode to whitespace only
    (a lone '▁' or 'Ġ') are dropped. An offset counts only where the decoded tokens so far are exactly a prefix of
    the word, so a token boundary inside a character (byte-level tokenizers) is never a morpheme boundary."""
    ids = [i for i in tok.encode(" " + word) if tok.decode([i]).strip()]
    offsets = set()
    for k in range(1, len(ids)):
        prefix = tok.decode(ids[:k]).lstrip()
        if 0 < len(prefix) < len(word) and word.startswith(prefix):
            offsets.add(len(prefix))
    return len(ids), offsets


def morph_score(tok, entries):
    """The seed's MorphScore. Each word is tokenized alone (see token_boundaries); a word that stays one token is
    not scored; a scored word counts 1 when a token boundary falls exactly len(stem) characters in. morph_score is
    the mean over scored words. split_share (scored / all words) must be read with it: splitting every word
    everywhere would score 1."""
    scored = hits = 0
    for word, stem, _ in entries:
        n_tokens, offsets = token_boundaries(tok, word)
        if n_tokens < 2:
            continue
        scored += 1
        hits += len(stem) in offsets
    return {"morph_score": hits / scored if scored else float("nan"), "n_scored": scored, "n_words": len(entries),
            "split_share": scored / len(entries) if entries else float("nan")}


# ----------------------------------------------------------------------------- lexicon hit rate

# Debian's dictionaries, with the apt package that installs each. Debian has no Hunspell Marathi, only aspell-mr.
DEFAULT_DICTIONARIES = {
    "hindi": ("/usr/share/hunspell/hi_IN.dic", "hunspell-hi"),
    "bangla": ("/usr/share/hunspell/bn_BD.dic", "hunspell-bn"),
    "marathi": ("aspell:mr", "aspell-mr"),
    "english": ("/usr/share/hunspell/en_US.dic", "hunspell-en-us"),
}
# NFC keeps these letters as letter + nukta (they are composition exclusions), but dictionaries may store the single
# code point (Debian's Bangla dictionary does), so a lookup tries both spellings.
NUKTA_LETTERS = {unicodedata.normalize("NFD", ch): ch for ch in "\u0958\u0959\u095a\u095b\u095c\u095d\u095e\u095f"
                 "\u09dc\u09dd\u09df"}


class LexiconError(Exception):
    pass


class Lexicon:
    """Word lookups in a spelling dictionary:
      path/to/xx.dic   Hunspell dictionary (xx.aff beside it), read by chunspell, which applies the affix rules
      aspell:CODE      an installed aspell dictionary; its complete word list comes from `aspell dump master`
      path/to/x.txt    a plain word list, one word a line
    """

    def __init__(self, source):
        self.source = source
        self.known = {}  # word -> bool, since stories repeat words a lot
        if source.startswith("aspell:"):
            self.word_set, self.hunspell = self._aspell_words(source[len("aspell:"):]), None
        elif source.endswith(".dic"):
            self.word_set, self.hunspell = None, self._hunspell(source)
        else:
            if not os.path.isfile(source):
                raise LexiconError(f"dictionary {source}: not found")
            with open(source, encoding="utf-8") as f:
                self.word_set, self.hunspell = {unicodedata.normalize("NFC", w.strip()) for w in f if w.strip()}, None

    @staticmethod
    def _hunspell(path):
        if not (os.path.isfile(path) and os.path.isfile(path[:-4] + ".aff")):
            raise LexiconError(f"dictionary {path}: not found (a Hunspell dictionary needs the .dic and the .aff)")
        try:
            import hunspell  # the chunspell package
        except ImportError:
            raise LexiconError("the Hunspell reader is not installed: pip install chunspell") from None
        return hunspell.Hunspell(os.path.basename(path)[:-4], hunspell_data_dir=os.path.dirname(path) or ".")

    @staticmethod
    def _aspell_words(code):
        try:
            out = subprocess.run(["aspell", "-d", code, "dump", "master"], capture_output=True, text=True, check=True)
        except FileNotFoundError:
            raise LexiconError(f"dictionary aspell:{code}: aspell is not installed (apt-get install aspell-{code})") \
                from None
        except subprocess.CalledProcessError as e:
            raise LexiconError(f"dictionary aspell:{code}: {' '.join(e.stderr.split())[:200]}") from None
        # entries may carry affix flags (word/FLAGS); the Marathi list has none, and a flagged word is still a word
        return {unicodedata.normalize("NFC", line.split("/")[0]) for line in out.stdout.splitlines() if line}

    def _lookup(self, word):
        return word in self.word_set if self.hunspell is None else self.hunspell.spell(word)

    def __contains__(self, word):
        if word not in self.known:
            composed = word
            for pair, letter in NUKTA_LETTERS.items():
                composed = composed.replace(pair, letter)
            self.known[word] = self._lookup(word) or (composed != word and self._lookup(composed))
        return self.known[word]


def default_dictionary(language):
    """(dictionary source, Debian package) for a language key, or (None, None) when this project knows none."""
    return DEFAULT_DICTIONARIES.get(language, (None, None))


def lexicon_hit_rate(texts, lexicon):
    """Share of words (those with at least one letter; numbers are left out) that the lexicon knows."""
    found = total = 0
    for text in texts:
        for word in words(text):
            if any(ch.isalpha() for ch in word):
                total += 1
                found += word in lexicon
    return found / total if total else float("nan")


# ----------------------------------------------------------------------------- confidence intervals

def mean_ci95(values):
    """(mean, half-width of the two-sided 95% Student-t confidence interval of the mean). One value: half-width NaN."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), float("nan")
    if len(values) == 1:
        return float(values[0]), float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean()), float(half)


# ----------------------------------------------------------------------------- judge ratings

# The original Regional-TinyStories names its rating files eval-<model>.json: a JSON list of score dicts with no
# model field.
ORIGINAL_RATING_FILE = regex.compile(r"eval[-_](.+)\.json$")
SUB_SCORES = tuple(field for field in SCORE_FIELDS if field != "overall")  # what the original's "true overall" averages
NOT_SCORES = ("id", "sample_index", "model", "judge", "rubric")  # a rating record's other fields, keys normalised


def read_rating_records(paths, any_rubric=False):
    """[{model, key, judge, location, rubric, fields, <score field>: float, ..., [true_overall]}] from rating files
    and folders of them. Reads this project's rating records (make_requests.py evaluate) and the original
    Regional-TinyStories' eval-<model>.json files: score keys may be spelt with spaces ("context awareness") and
    scores may be numeric strings ("8"); a file named eval-<model>.json names the model of records that do not. key
    identifies the rated story, to pair two models' ratings: ID plus sample_index, or "#<position in the file>"
    without an ID. A record without "rubric" is the seed rubric's: fields are SCORE_FIELDS, and true_overall is the
    mean of the five sub-scores (the original's "true overall", beside the judge's own). With any_rubric, a record
    of another rubric has as fields every key but NOT_SCORES; without, it is an error."""
    ratings = []
    for file in input_files(paths):
        named = ORIGINAL_RATING_FILE.search(os.path.basename(file))
        for position, (location, record) in enumerate(read_input_records(file)):
            by_field = {regex.sub(r"[\s\-]+", "_", str(k).strip().lower()): v for k, v in record.items()}
            model = record.get("model") or (named and named.group(1))
            if not model:
                raise DataError(f"{location}: rating has no 'model'")
            rubric = str(record.get("rubric") or "seed")
            if rubric == "seed":
                fields = SCORE_FIELDS
            elif any_rubric:
                fields = tuple(field for field in by_field if field not in NOT_SCORES)
                if not fields:
                    raise DataError(f"{location}: rating has no scores")
            else:
                raise DataError(f"{location}: rated with the rubric {rubric!r}; this reads seed-rubric ratings only "
                                "(aggregate_ratings.py tables any rubric)")
            rating = {"model": str(model), "judge": str(record.get("judge", "unknown judge")), "location": location,
                      "key": (f"{record['ID']}" + (f"#{record['sample_index']}" if "sample_index" in record else "")
                              if "ID" in record else f"#{position}"), "rubric": rubric, "fields": fields}
            for field in fields:
                value = by_field.get(field)
                number = _as_number(value)
                if number is None or not 1 <= number <= 10:
                    raise DataError(f"{location}: {field} is {value!r}, not a score from 1 to 10")
                rating[field] = number
            if rubric == "seed":
                rating["true_overall"] = sum(rating[f] for f in SUB_SCORES) / len(SUB_SCORES)
            ratings.append(rating)
    return ratings


def _as_number(value):
    """A score as a number: an int or float as it is, a numeric string ("8") converted; anything else None."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_ratings(paths):
    """({model: {field: [scores]}}, {judges}) from rating files and folders of them (see read_rating_records)."""
    scores = defaultdict(lambda: defaultdict(list))
    judges = set()
    for rating in read_rating_records(paths):
        for field in (*SCORE_FIELDS, "true_overall"):
            scores[rating["model"]][field].append(rating[field])
        judges.add(rating["judge"])
    return scores, judges


def score_summary(values):
    """{n, mean, median, sd, ci95}: sd with ddof=1, ci95 the half-width of mean_ci95 (NaN below two values)."""
    values = np.asarray(values, dtype=np.float64)
    mean, ci = mean_ci95(values)
    return {"n": len(values), "mean": mean, "median": float(np.median(values)) if len(values) else float("nan"),
            "sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan"), "ci95": ci}


def bootstrap_mean_ci(values, resamples=10_000, seed=1337, level=0.95):
    """Percentile bootstrap interval (low, high) of the mean of values: resample with replacement `resamples` times
    (seeded: the same input gives the same interval)."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.concatenate([values[rng.integers(0, len(values), (min(1000, resamples - done), len(values)))].mean(1)
                            for done in range(0, resamples, 1000)])
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def paired_comparison(a, b, resamples=10_000, seed=1337):
    """Paired comparison of two models' scores on the same items (a[i] and b[i] rate the same prompt):
    mean difference a - b with its bootstrap 95% CI, the Wilcoxon signed-rank p-value (two-sided; items with equal
    scores are left out, as Wilcoxon's test does; 1.0 when all are equal), and the shares of items each model wins."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    difference = a - b
    low, high = bootstrap_mean_ci(difference, resamples, seed)
    p = float(stats.wilcoxon(a, b).pvalue) if np.any(difference != 0) else 1.0
    return {"n": len(a), "mean_difference": float(difference.mean()), "ci_low": low, "ci_high": high,
            "wilcoxon_p": p, "a_wins": float(np.mean(difference > 0)), "ties": float(np.mean(difference == 0)),
            "b_wins": float(np.mean(difference < 0))}


def unpaired_z_test(a, b):
    """The original Regional-TinyStories' test, for comparison: z = (mean a - mean b) / sqrt(sd_a²/n_a + sd_b²/n_b)
    with population sds, two-sided normal p-value. It treats the two sets of scores as independent samples."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    se = math.sqrt(a.var() / len(a) + b.var() / len(b))
    if se == 0:
        return {"z": float("nan"), "z_p": float("nan")}
    z = (a.mean() - b.mean()) / se
    return {"z": float(z), "z_p": float(2 * stats.norm.sf(abs(z)))}


# ----------------------------------------------------------------------------- reporting

LANGUAGE_ALIASES = {"hindi": "hindi", "marathi": "marathi", "bangla": "bangla", "bengali": "bangla",
                    "english": "english"}


def language_in(name):
    """The language key a file, dataset or run name mentions ('demo-hindi' -> 'hindi'), or None."""
    name = name.lower()
    return next((key for alias, key in LANGUAGE_ALIASES.items() if alias in name), None)


def run_name(model_path):
    """The run a checkpoint path belongs to: out/x/ckpt_best.pt -> 'x'; a run folder out/x -> 'x'."""
    path = os.path.normpath(model_path)
    return os.path.basename(os.path.dirname(path) if path.endswith(".pt") else path)


def fmt(value, digits=3):
    """A number for a table: fixed digits, '—' for missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def markdown_table(headers, rows):
    """A GitHub Markdown table; cells are converted with str() and may not hold '|' or newlines."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def without_nan(row):
    """A row with NaN values replaced by None, so JSON files stay valid JSON."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def write_csv(path, rows):
    """rows: list of dicts with the same keys, written in that key order, atomically."""
    with atomic_write(path) as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
