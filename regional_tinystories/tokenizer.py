"""
One small tokenizer interface for prepare.py, train.py, sample.py and the analysis scripts.

Every tokenizer has: encode(text) -> ids (no bos/eos), encode_batch(texts), decode(ids), bos_id, eos_id,
vocab_size, and a `spec`: a small JSON-safe dict that says how to load it again. Kinds:

  sp-bpe:8192, sp-unigram:8192   SentencePiece trained on the corpus (byte fallback, so no <unk>)
  bpe:8192                       byte-level BPE trained on the corpus with HF `tokenizers`
  tiktoken:gpt2                  any tiktoken encoding; <|endoftext|> is both bos and eos
  hf:<hub id or local dir>       transformers AutoTokenizer; must define bos and eos
  sarvam, sutra                  presets for hf:sarvamai/sarvam-1 and hf:TWO/sutra-mlt256-v2

Trained tokenizers live in a file next to the dataset (spec["file"], relative to that folder). A checkpoint
carries the file's bytes too (export/from_export), so a model can be sampled without the dataset folder.
"""
import base64
import hashlib
import json
import os
import tempfile

from regional_tinystories.errors import one_line
from regional_tinystories.files import atomic_write, write_text_atomic

HF_PRESETS = {"sarvam": "sarvamai/sarvam-1", "sutra": "TWO/sutra-mlt256-v2"}
TRAINED_KINDS = {"sp-bpe": "sentencepiece", "sp-unigram": "sentencepiece", "bpe": "bytelevel-bpe"}
BOS, EOS = "<bos>", "<eos>"
WORD_SPLIT_PATTERN = r" ?[\p{L}\p{M}]+| ?\p{N}+| ?[^\s\p{L}\p{M}\p{N}]+|\s+(?!\S)|\s+"


class TokenizerError(Exception):
    """A tokenizer could not be built or loaded; the message is one line naming the tokenizer and the cause."""


class SentencePieceTokenizer:
    def __init__(self, model_proto, spec):
        import sentencepiece as spm
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.model_proto = model_proto
        self.spec = spec
        self.bos_id, self.eos_id = self.sp.bos_id(), self.sp.eos_id()
        self.vocab_size = self.sp.get_piece_size()

    def encode(self, text):
        return self.sp.encode(text)

    def encode_batch(self, texts):
        # num_threads=1: prepare.py parallelises across processes; SentencePiece's own threads would oversubscribe
        return self.sp.encode(list(texts), num_threads=1)

    def decode(self, ids):
        return self.sp.decode([int(i) for i in ids])

    def id_to_piece(self, i):
        return self.sp.id_to_piece(int(i))

    def is_byte_fallback(self, i):
        return self.sp.is_byte(int(i))

    def files(self):
        return {self.spec["file"]: self.model_proto}


class ByteLevelBPETokenizer:
    def __init__(self, json_text, spec):
        from tokenizers import Tokenizer as HFTokenizer
        self.tok = HFTokenizer.from_str(json_text)
        self.json_text = json_text
        self.spec = spec
        self.bos_id, self.eos_id = self.tok.token_to_id(BOS), self.tok.token_to_id(EOS)
        self.vocab_size = self.tok.get_vocab_size()

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts):
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids):
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def id_to_piece(self, i):
        return self.tok.id_to_token(int(i))

    def is_byte_fallback(self, i):
        return False  # byte-level: every byte is in the base alphabet, nothing "falls back"

    def files(self):
        return {self.spec["file"]: self.json_text.encode("utf-8")}


class TiktokenTokenizer:
    def __init__(self, encoding, spec):
        self.enc = encoding
        self.spec = spec
        self.bos_id = self.eos_id = encoding.eot_token  # <|endoftext|> frames documents, as in GPT-2
        self.vocab_size = encoding.n_vocab

    def encode(self, text):
        return self.enc.encode_ordinary(text)

    def encode_batch(self, texts):
        return self.enc.encode_ordinary_batch(list(texts), num_threads=1)

    def decode(self, ids):
        ids = [int(i) for i in ids if int(i) != self.eos_id]
        return self.enc.decode(ids)

    def id_to_piece(self, i):
        return self.enc.decode_single_token_bytes(int(i)).decode("utf-8", errors="replace")

    def is_byte_fallback(self, i):
        return False

    def files(self):
        return {}


class HFAutoTokenizer:
    def __init__(self, tok, spec):
        self.tok = tok
        self.spec = spec
        name = spec["name"]
        if tok.bos_token_id is None or tok.eos_token_id is None:
            raise TokenizerError(f"tokenizer hf:{name}: it defines no {'bos' if tok.bos_token_id is None else 'eos'} "
                                 "token, and documents are framed as <bos> story <eos>")
        self.bos_id, self.eos_id = tok.bos_token_id, tok.eos_token_id
        self.vocab_size = len(tok)

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False)

    def encode_batch(self, texts):
        return self.tok(list(texts), add_special_tokens=False)["input_ids"]

    def decode(self, ids):
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def id_to_piece(self, i):
        return self.tok.convert_ids_to_tokens(int(i))

    def is_byte_fallback(self, i):
        piece = self.id_to_piece(i)
        return piece == self.tok.unk_token or (len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"))

    def files(self):
        """The tokenizer's own files (save_pretrained), so a checkpoint carries them and needs no hub later."""
        with tempfile.TemporaryDirectory() as folder:
            self.tok.save_pretrained(folder)
            return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))
                    if os.path.isfile(os.path.join(folder, name))}

    def identity(self):
        """What makes two copies the same tokenizer, wherever they were loaded from: vocabulary and special ids."""
        return json.dumps([sorted(self.tok.get_vocab().items()), self.bos_id, self.eos_id], ensure_ascii=False).encode()


# ----------------------------------------------------------------------------- parsing names and loading specs

def parse_name(name):
    """'sp-bpe:8192' -> spec dict (without the file). Raises TokenizerError on anything unknown."""
    name = name.strip()
    if name in HF_PRESETS:
        return {"kind": "hf", "name": HF_PRESETS[name]}
    kind, _, arg = name.partition(":")
    if kind in TRAINED_KINDS:
        if not arg.isdigit() or int(arg) < 260:
            raise TokenizerError(f"tokenizer {name}: vocabulary size must be a whole number >= 260, e.g. {kind}:8192")
        spec = {"kind": TRAINED_KINDS[kind], "vocab_size": int(arg)}
        if kind.startswith("sp-"):
            spec["model_type"] = kind[3:]
        return spec
    if kind == "tiktoken" and arg:
        return {"kind": "tiktoken", "name": arg}
    if kind == "hf" and arg:
        return {"kind": "hf", "name": arg}
    raise TokenizerError(f"tokenizer {name!r}: unknown kind; use sp-bpe:N, sp-unigram:N, bpe:N, tiktoken:NAME, "
                         f"hf:HUB_ID_OR_DIR, {', '.join(HF_PRESETS)}")


def describe(spec):
    """Short human name of a spec, e.g. 'sp-bpe:8192', 'tiktoken:gpt2'."""
    if spec["kind"] == "sentencepiece":
        return f"sp-{spec['model_type']}:{spec['vocab_size']}"
    if spec["kind"] == "bytelevel-bpe":
        return f"bpe:{spec['vocab_size']}"
    return f"{spec['kind']}:{spec['name']}"


def needs_training(spec):
    return spec["kind"] in ("sentencepiece", "bytelevel-bpe")


def load_tokenizer(spec, base_dir=".", file_bytes=None):
    """Build the tokenizer a spec describes. Trained kinds read spec['file'] from base_dir (or file_bytes)."""
    kind = spec["kind"]
    if kind in ("sentencepiece", "bytelevel-bpe"):
        if file_bytes is None:
            path = os.path.join(base_dir, spec["file"])
            if not os.path.isfile(path):
                raise TokenizerError(f"tokenizer {describe(spec)}: file {path} is missing")
            with open(path, "rb") as f:
                file_bytes = f.read()
        if kind == "sentencepiece":
            return SentencePieceTokenizer(file_bytes, spec)
        return ByteLevelBPETokenizer(file_bytes.decode("utf-8"), spec)
    if kind == "tiktoken":
        import tiktoken
        try:
            encoding = tiktoken.get_encoding(spec["name"])
        except Exception as e:  # tiktoken downloads ranks on first use; offline this is a network error
            raise TokenizerError(f"tokenizer tiktoken:{spec['name']}: could not load the encoding "
                                 f"({one_line(e)})") from None
        return TiktokenTokenizer(encoding, spec)
    if kind == "hf":
        return load_hf_tokenizer(spec, spec["name"])
    raise TokenizerError(f"tokenizer spec {spec!r}: unknown kind {kind!r}")


def load_hf_tokenizer(spec, source):
    """A transformers tokenizer from a hub id or a folder (spec names where it first came from)."""
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except Exception as e:  # offline hub, unknown id, gated repo, missing files
        raise TokenizerError(f"tokenizer hf:{spec['name']}: could not load it ({one_line(e)})") from None
    return HFAutoTokenizer(tok, spec)


def files_sha256(tok):
    """One SHA-256 over the tokenizer's spec and files: what meta.json and checkpoints record, so a dataset or
    checkpoint whose tokenizer file was swapped for another is refused instead of decoding garbage."""
    h = hashlib.sha256(repr(sorted((k, v) for k, v in tok.spec.items() if k != "vocab_size")).encode())
    if isinstance(tok, HFAutoTokenizer):  # its saved files name the folder they came from: hash what it does
        h.update(tok.identity())
        return h.hexdigest()
    for name, data in sorted(tok.files().items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def load_dataset_tokenizer(meta, data_dir):
    """The tokenizer of a prepared dataset, checked against the hash prepare.py recorded in meta.json."""
    tok = load_tokenizer(meta["tokenizer"], data_dir)
    expected = meta.get("tokenizer_sha256")
    if expected is not None and files_sha256(tok) != expected:
        raise TokenizerError(f"{data_dir}: the tokenizer file does not match meta.json (it was replaced after "
                             f"prepare.py wrote the .bin files); run prepare.py again")
    return tok


def export(tok):
    """What a checkpoint stores: the spec plus the bytes of any tokenizer file, base64 so it loads weights_only,
    and their hash."""
    return {"spec": tok.spec, "files": {k: base64.b64encode(v).decode("ascii") for k, v in tok.files().items()},
            "sha256": files_sha256(tok)}


def from_export(exported):
    spec, files = exported["spec"], exported.get("files", {})
    if spec["kind"] == "hf" and files:  # a transformers tokenizer saved whole into the checkpoint: no hub needed
        with tempfile.TemporaryDirectory() as folder:
            for name, data in files.items():
                with open(os.path.join(folder, os.path.basename(name)), "wb") as f:
                    f.write(base64.b64decode(data))
            tok = load_hf_tokenizer(spec, folder)
    else:
        data = base64.b64decode(files[spec["file"]]) if "file" in spec and spec["file"] in files else None
        tok = load_tokenizer(spec, file_bytes=data)
    if "sha256" in exported and files_sha256(tok) != exported["sha256"]:
        raise TokenizerError(f"tokenizer {describe(spec)}: the checkpoint's tokenizer does not match its recorded hash")
    return tok


# ----------------------------------------------------------------------------- training on a corpus

def train_tokenizer(spec, texts, out_dir, max_sentences=2_000_000, num_threads=None, seed=1337):
    """Train a SentencePiece or byte-level BPE tokenizer on an iterable of documents; save it in out_dir.
    The same documents and seed give the same tokenizer."""
    os.makedirs(out_dir, exist_ok=True)
    spec = dict(spec)
    if spec["kind"] == "sentencepiece":
        spec["file"] = "tokenizer.model"
        _train_sentencepiece(spec, texts, out_dir, max_sentences, num_threads or os.cpu_count(), seed)
    elif spec["kind"] == "bytelevel-bpe":
        spec["file"] = "tokenizer.json"
        _train_bytelevel_bpe(spec, texts, out_dir)
    else:
        raise TokenizerError(f"tokenizer {describe(spec)}: nothing to train")
    return load_tokenizer(spec, out_dir)


MAX_TRAINING_SENTENCE = 1 << 14  # bytes; SentencePiece skips longer "sentences" (and fails if all are)


def _lines(texts, failures):
    """SentencePiece trains on "sentences": paragraphs, and very long ones cut at spaces. An error while reading
    the corpus is kept in `failures`, since SentencePiece would report it as RuntimeError: INTERNAL."""
    try:
        for text in texts:
            for line in text.split("\n"):
                while len(line.encode("utf-8")) > MAX_TRAINING_SENTENCE:
                    cut = line.rfind(" ", 0, MAX_TRAINING_SENTENCE // 4)  # characters are at most 4 bytes
                    cut = cut if cut > 0 else MAX_TRAINING_SENTENCE // 4
                    yield line[:cut]
                    line = line[cut:].lstrip(" ")
                if line.strip():
                    yield line
    except BaseException as e:  # also Ctrl-C / SIGTERM while reading
        failures.append(e)
        raise


def _train_sentencepiece(spec, texts, out_dir, max_sentences, num_threads, seed):
    import sentencepiece as spm
    spm.set_random_generator_seed(seed)  # it samples and shuffles sentences
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "sp")
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_lines(texts, failures), model_prefix=prefix, vocab_size=spec["vocab_size"],
                model_type=spec["model_type"], byte_fallback=True, character_coverage=0.9995,
                # text is NFC-normalised by prepare.py; 'identity' keeps decode(encode(x)) == x
                normalization_rule_name="identity", remove_extra_whitespaces=False,
                # training sees one paragraph at a time, so without this every newline would cost a byte token
                user_defined_symbols=["\n"],
                unk_id=0, bos_id=1, eos_id=2, pad_id=-1, bos_piece=BOS, eos_piece=EOS,
                input_sentence_size=max_sentences, shuffle_input_sentence=True,
                max_sentence_length=MAX_TRAINING_SENTENCE,
                hard_vocab_limit=False, num_threads=num_threads, minloglevel=2)
        except RuntimeError as e:
            if failures:  # the corpus, not SentencePiece, failed: report the corpus's own error
                raise failures[0] from None
            raise TokenizerError(f"tokenizer {describe(spec)}: SentencePiece training failed ({one_line(e)})") from None
        with open(prefix + ".model", "rb") as f, atomic_write(os.path.join(out_dir, spec["file"]), "wb") as out:
            out.write(f.read())
    spec["vocab_size"] = load_tokenizer(spec, out_dir).vocab_size  # small corpora may give fewer pieces


def _train_bytelevel_bpe(spec, texts, out_dir):
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer
    tok = HFTokenizer(models.BPE())
    # GPT-2's split regex breaks Indic words at every vowel sign (\p{M} is not \p{L}); keep marks inside words
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(pattern=Regex(WORD_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=spec["vocab_size"], special_tokens=[BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    path = os.path.join(out_dir, spec["file"])
    write_text_atomic(path, tok.to_str())
    spec["vocab_size"] = tok.get_vocab_size()
