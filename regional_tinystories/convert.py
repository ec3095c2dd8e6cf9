"""
Converting models to and from other formats: Hugging Face transformers (LlamaForCausalLM for the modern recipe,
GPT2LMHeadModel for the classic one) with a fast tokenizer that encodes exactly as prepare.py does, GGUF (llama.cpp,
Ollama), llama2.c's run.c, and nanoGPT checkpoints.

  hf_tokenizer(tok)                    -> PreTrainedTokenizerFast (SentencePiece or byte-level BPE), bos added
  to_hf(model, tok)                    -> (transformers model, its tokenizer)
  from_hf(hf_model)                    -> (model_args, state_dict) of this project's GPT
  from_nanogpt(checkpoint)             -> (model_args, state_dict) of the classic recipe
  write_gguf(model, tok, path)         the llama (modern) or gpt2 (classic) GGUF architecture, vocabulary inside
  write_llama2c(model, tok, folder)    model.bin + tokenizer.bin for llama2.c's run.c; read_llama2c reads them back

Weight layouts. This project's RoPE rotates adjacent pairs (dims 2i, 2i+1), as Meta's Llama code, llama2.c and GGUF
do; transformers' Llama rotates halves (dims i, i + d/2), so q and k rows are permuted per head on the way to and
from transformers. GPT-2 in transformers stores linear weights transposed (Conv1D). QK-norm has no place in
either architecture: such a model is refused rather than exported as something else.
"""
import os
import struct

import numpy as np
import torch

from regional_tinystories.errors import InputError

SP_USER_DEFINED = 4  # sentencepiece_model.proto: ModelProto.SentencePiece.Type.USER_DEFINED


class ExportError(InputError):
    """This model or tokenizer cannot be written in the asked format; the message says why, in one line."""


def _rms_eps():
    # nn.RMSNorm(eps=None) uses the dtype's machine epsilon; the exports run in float32
    return float(torch.finfo(torch.float32).eps)


def _swiglu_hidden(model):
    return model.blocks[0].mlp.c_proj.weight.shape[1]


# ----------------------------------------------------------------------------- tokenizers

def _sentencepiece_proto(tok):
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2  # ships with sentencepiece; needs protobuf
    proto = sp_pb2.ModelProto()
    proto.ParseFromString(tok.model_proto)
    return proto


def _sentencepiece_backend(tok):
    """A `tokenizers` Tokenizer that segments like the SentencePiece model: the same pieces, the dummy "▁" before
    the first word only, byte fallback, and the user-defined "\\n" piece kept whole."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    proto = _sentencepiece_proto(tok)
    pieces = [(p.piece, p.score) for p in proto.pieces]
    unk_id = proto.trainer_spec.unk_id
    if proto.trainer_spec.model_type == 1:  # unigram
        model = models.Unigram(pieces, unk_id=unk_id, byte_fallback=True)
    else:
        vocab = {piece: i for i, (piece, _) in enumerate(pieces)}
        ranked = []  # a merge (left, right) for every split of a piece into two pieces, in the piece's rank order
        for merged, rank in vocab.items():
            for cut in range(1, len(merged)):
                left, right = merged[:cut], merged[cut:]
                if left in vocab and right in vocab:
                    ranked.append((rank, vocab[left], vocab[right], left, right))
        merges = [(left, right) for *_, left, right in sorted(ranked)]
        model = models.BPE(vocab, merges, unk_token=pieces[unk_id][0], byte_fallback=True, fuse_unk=True)
    backend = Tokenizer(model)
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(content=" ", left=1, right=0)])
    special = [AddedToken(pieces[i][0], special=True, normalized=False) for i in (unk_id, tok.bos_id, tok.eos_id)]
    user = [AddedToken(p.piece, special=False, normalized=False) for p in proto.pieces if p.type == SP_USER_DEFINED]
    backend.add_special_tokens(special)
    backend.add_tokens(user)
    return backend


def hf_tokenizer(tok):
    """A PreTrainedTokenizerFast that encodes a story as prepare.py does ([bos] + ids; prepare.py appends the eos
    after the story) and decodes the ids back to the same text."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast
    kind = tok.spec["kind"]
    if kind == "sentencepiece":
        backend = _sentencepiece_backend(tok)
    elif kind == "bytelevel-bpe":
        backend = Tokenizer.from_str(tok.json_text)
    elif kind == "hf":
        return tok.tok  # already a transformers tokenizer
    else:
        raise ExportError(f"tokenizer {kind}: no Hugging Face tokenizer can be built from it here; "
                          f"use a SentencePiece, byte-level BPE or hf: tokenizer")
    bos, eos = tok.id_to_piece(tok.bos_id), tok.id_to_piece(tok.eos_id)
    backend.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.bos_id)])
    extra = {"unk_token": tok.id_to_piece(0)} if kind == "sentencepiece" else {}
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos, **extra)


# ----------------------------------------------------------------------------- transformers

def _interleaved_to_halves(w, n_head):
    """Rows of a q or k projection, per head, from adjacent-pair order (0,1,2,3,...) to halves (0,2,..., 1,3,...)."""
    out, d = w.shape[0], w.shape[0] // n_head
    return w.reshape(n_head, d // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(out, *w.shape[1:])


def _halves_to_interleaved(w, n_head):
    out, d = w.shape[0], w.shape[0] // n_head
    return w.reshape(n_head, 2, d // 2, *w.shape[1:]).transpose(1, 2).reshape(out, *w.shape[1:])


def _check_exportable(model):
    c = model.config
    if c.recipe == "modern" and c.qk_norm:
        raise ExportError("the model uses QK-norm, which neither LlamaForCausalLM, llama.cpp nor llama2.c has; "
                          "exporting it would give a different model")


def hf_config(model, tok):
    c = model.config
    common = dict(vocab_size=c.vocab_size, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id,
                  tie_word_embeddings=c.tie_weights, dtype="float32")
    if c.recipe == "modern":
        from transformers import LlamaConfig
        return LlamaConfig(hidden_size=c.n_embd, intermediate_size=_swiglu_hidden(model), num_hidden_layers=c.n_layer,
                           num_attention_heads=c.n_head, num_key_value_heads=c.n_head, head_dim=c.n_embd // c.n_head,
                           max_position_embeddings=c.block_size, rms_norm_eps=_rms_eps(), rope_theta=c.rope_theta,
                           attention_bias=c.bias, mlp_bias=c.bias, hidden_act="silu", **common)
    from transformers import GPT2Config
    return GPT2Config(n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head, n_positions=c.block_size,
                      activation_function="gelu", layer_norm_epsilon=1e-5, resid_pdrop=0.0, embd_pdrop=0.0,
                      attn_pdrop=0.0, **common)


def hf_state_dict(model):
    """This project's weights under transformers' names and layouts."""
    c, sd = model.config, {k: v.detach().float() for k, v in model.state_dict().items()}
    out = {}
    if c.recipe == "modern":
        out["model.embed_tokens.weight"] = sd["wte.weight"]
        for i in range(c.n_layer):
            p, q = f"blocks.{i}.", f"model.layers.{i}."
            for suffix in ("weight", "bias"):
                if p + f"attn.c_attn.{suffix}" not in sd:
                    continue
                wq, wk, wv = sd[p + f"attn.c_attn.{suffix}"].split(c.n_embd)
                out[q + f"self_attn.q_proj.{suffix}"] = _interleaved_to_halves(wq, c.n_head)
                out[q + f"self_attn.k_proj.{suffix}"] = _interleaved_to_halves(wk, c.n_head)
                out[q + f"self_attn.v_proj.{suffix}"] = wv
                out[q + f"self_attn.o_proj.{suffix}"] = sd[p + f"attn.c_proj.{suffix}"]
                gate, up = sd[p + f"mlp.c_fc.{suffix}"].chunk(2)
                out[q + f"mlp.gate_proj.{suffix}"], out[q + f"mlp.up_proj.{suffix}"] = gate, up
                out[q + f"mlp.down_proj.{suffix}"] = sd[p + f"mlp.c_proj.{suffix}"]
            out[q + "input_layernorm.weight"] = sd[p + "ln_1.weight"]
            out[q + "post_attention_layernorm.weight"] = sd[p + "ln_2.weight"]
        out["model.norm.weight"] = sd["ln_f.weight"]
    else:
        out["transformer.wte.weight"], out["transformer.wpe.weight"] = sd["wte.weight"], sd["wpe.weight"]
        for i in range(c.n_layer):
            p, q = f"blocks.{i}.", f"transformer.h.{i}."
            for ours, theirs in (("ln_1", "ln_1"), ("ln_2", "ln_2")):
                out[q + f"{theirs}.weight"] = sd[p + f"{ours}.weight"]
                out[q + f"{theirs}.bias"] = sd.get(p + f"{ours}.bias", torch.zeros(c.n_embd))
            for ours in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                w = sd[p + f"{ours}.weight"]
                out[q + f"{ours}.weight"] = w.t().contiguous()  # Conv1D: (in, out)
                out[q + f"{ours}.bias"] = sd.get(p + f"{ours}.bias", torch.zeros(w.shape[0]))
        out["transformer.ln_f.weight"] = sd["ln_f.weight"]
        out["transformer.ln_f.bias"] = sd.get("ln_f.bias", torch.zeros(c.n_embd))
    out["lm_head.weight"] = sd["lm_head.weight"]
    return out


def to_hf(model, tok):
    """(transformers model in eval mode, float32; its tokenizer)."""
    _check_exportable(model)
    from transformers import AutoModelForCausalLM
    config = hf_config(model, tok)
    hf_model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = hf_model.load_state_dict(hf_state_dict(model), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)
               and not k.endswith(("attn.bias", "attn.masked_bias"))]
    if missing or unexpected:
        raise ExportError(f"weights do not fit {type(hf_model).__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if config.tie_word_embeddings:
        hf_model.tie_weights()
    return hf_model.eval(), hf_tokenizer(tok)


def from_hf(hf_model):
    """(model_args, state_dict) of this project's GPT from a transformers LlamaForCausalLM or GPT2LMHeadModel."""
    cfg, sd = hf_model.config, {k: v.detach().float() for k, v in hf_model.state_dict().items()}
    tied = bool(getattr(cfg, "tie_word_embeddings", True))
    out = {}
    if cfg.model_type == "llama":
        if cfg.num_key_value_heads != cfg.num_attention_heads:
            raise ExportError("grouped-query attention (num_key_value_heads < num_attention_heads) is not supported")
        C, H = cfg.hidden_size, cfg.num_attention_heads
        args = dict(vocab_size=cfg.vocab_size, block_size=cfg.max_position_embeddings, n_layer=cfg.num_hidden_layers,
                    n_head=H, n_embd=C, bias=bool(getattr(cfg, "attention_bias", False)), recipe="modern",
                    tie_weights=tied, rope_theta=float(getattr(cfg, "rope_theta", 10000.0)), dropout=0.0)
        out["wte.weight"] = sd["model.embed_tokens.weight"]
        for i in range(cfg.num_hidden_layers):
            p, q = f"blocks.{i}.", f"model.layers.{i}."
            for suffix in ("weight", "bias"):
                if q + f"self_attn.q_proj.{suffix}" not in sd:
                    continue
                out[p + f"attn.c_attn.{suffix}"] = torch.cat([
                    _halves_to_interleaved(sd[q + f"self_attn.q_proj.{suffix}"], H),
                    _halves_to_interleaved(sd[q + f"self_attn.k_proj.{suffix}"], H),
                    sd[q + f"self_attn.v_proj.{suffix}"]])
                out[p + f"attn.c_proj.{suffix}"] = sd[q + f"self_attn.o_proj.{suffix}"]
                out[p + f"mlp.c_fc.{suffix}"] = torch.cat([sd[q + f"mlp.gate_proj.{suffix}"], sd[q + f"mlp.up_proj.{suffix}"]])
                out[p + f"mlp.c_proj.{suffix}"] = sd[q + f"mlp.down_proj.{suffix}"]
            out[p + "ln_1.weight"] = sd[q + "input_layernorm.weight"]
            out[p + "ln_2.weight"] = sd[q + "post_attention_layernorm.weight"]
        out["ln_f.weight"] = sd["model.norm.weight"]
    elif cfg.model_type == "gpt2":
        args = dict(vocab_size=cfg.vocab_size, block_size=cfg.n_positions, n_layer=cfg.n_layer, n_head=cfg.n_head,
                    n_embd=cfg.n_embd, bias=True, recipe="classic", tie_weights=tied, dropout=0.0)
        out["wte.weight"], out["wpe.weight"] = sd["transformer.wte.weight"], sd["transformer.wpe.weight"]
        for i in range(cfg.n_layer):
            p, q = f"blocks.{i}.", f"transformer.h.{i}."
            for name in ("ln_1", "ln_2"):
                out[p + f"{name}.weight"], out[p + f"{name}.bias"] = sd[q + f"{name}.weight"], sd[q + f"{name}.bias"]
            for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                out[p + f"{name}.weight"] = sd[q + f"{name}.weight"].t().contiguous()
                out[p + f"{name}.bias"] = sd[q + f"{name}.bias"]
        out["ln_f.weight"], out["ln_f.bias"] = sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"]
    else:
        raise ExportError(f"model type {cfg.model_type!r}: only Llama- and GPT-2-architecture models can be imported")
    out["lm_head.weight"] = sd["lm_head.weight"] if "lm_head.weight" in sd else out["wte.weight"]
    return args, out


NANOGPT_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout")


def from_nanogpt(ckpt, where):
    """(model_args, state_dict) of the classic recipe from a nanoGPT checkpoint dict ({model_args, model}, keys
    transformer.h.N..., maybe with torch.compile's _orig_mod. prefix)."""
    args = ckpt.get("model_args")
    if not isinstance(args, dict) or not all(k in args for k in ("n_layer", "n_head", "n_embd", "vocab_size")):
        raise InputError(f"{where}: not a nanoGPT checkpoint (model_args lacks n_layer/n_head/n_embd/vocab_size)")
    state = {}
    for key, value in ckpt["model"].items():
        key = key.removeprefix("_orig_mod.").removeprefix("module.")
        if key.endswith((".attn.bias", ".attn.masked_bias")) and value.dim() == 4:
            continue  # the causal-mask buffer of nanoGPT's non-flash attention
        key = key.removeprefix("transformer.").replace("h.", "blocks.", 1) if key.startswith("transformer.h.") \
            else key.removeprefix("transformer.")
        state[key] = value
    model_args = dict(vocab_size=args["vocab_size"], block_size=args.get("block_size", 1024), n_layer=args["n_layer"],
                      n_head=args["n_head"], n_embd=args["n_embd"], bias=bool(args.get("bias", True)),
                      dropout=0.0, recipe="classic", tie_weights=True)
    return model_args, state


# ----------------------------------------------------------------------------- GGUF (llama.cpp, Ollama)

def _gguf_vocabulary(writer, tok):
    import gguf
    kind = tok.spec["kind"]
    if kind == "sentencepiece":
        proto = _sentencepiece_proto(tok)
        types = {1: gguf.TokenType.NORMAL, 2: gguf.TokenType.UNKNOWN, 3: gguf.TokenType.CONTROL,
                 4: gguf.TokenType.USER_DEFINED, 5: gguf.TokenType.UNUSED, 6: gguf.TokenType.BYTE}
        writer.add_tokenizer_model("llama")
        writer.add_token_list([p.piece.encode("utf-8") for p in proto.pieces])
        writer.add_token_scores([p.score for p in proto.pieces])
        writer.add_token_types([types.get(p.type, gguf.TokenType.NORMAL) for p in proto.pieces])
        writer.add_unk_token_id(proto.trainer_spec.unk_id)
        writer.add_add_space_prefix(proto.normalizer_spec.add_dummy_prefix)
    else:
        # GGUF's byte-level BPE ("gpt2") splits words with a fixed regex (GPT-2's or another known model's), which
        # cuts Indic words at their vowel signs; this project's byte-level BPE splits differently, so a GGUF reader
        # would encode text into other tokens than the model was trained on
        raise ExportError(f"tokenizer {kind}: GGUF export needs a SentencePiece tokenizer (GGUF readers would split "
                          f"text for this one with another regex than it was trained with)")
    writer.add_bos_token_id(tok.bos_id)
    writer.add_eos_token_id(tok.eos_id)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)


def write_gguf(model, tok, path, name="regional-tinystories"):
    """The model in float32 GGUF: llama architecture for the modern recipe, gpt2 for the classic one."""
    import gguf
    _check_exportable(model)
    c, sd = model.config, {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    arch = "llama" if c.recipe == "modern" else "gpt2"
    writer = gguf.GGUFWriter(path, arch)
    writer.add_name(name)
    writer.add_context_length(c.block_size)
    writer.add_embedding_length(c.n_embd)
    writer.add_block_count(c.n_layer)
    writer.add_head_count(c.n_head)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    tensors = {"token_embd.weight": sd["wte.weight"]}
    if arch == "llama":
        writer.add_feed_forward_length(_swiglu_hidden(model))
        writer.add_head_count_kv(c.n_head)
        writer.add_rope_dimension_count(c.n_embd // c.n_head)
        writer.add_rope_freq_base(c.rope_theta)
        writer.add_layer_norm_rms_eps(_rms_eps())
        writer.add_vocab_size(c.vocab_size)
        for i in range(c.n_layer):
            p, b = f"blocks.{i}.", f"blk.{i}."
            # GGUF keeps q and k in the adjacent-pair RoPE layout, this project's own: no permutation
            wq, wk, wv = np.split(sd[p + "attn.c_attn.weight"], 3)
            gate, up = np.split(sd[p + "mlp.c_fc.weight"], 2)
            tensors.update({b + "attn_norm.weight": sd[p + "ln_1.weight"], b + "attn_q.weight": wq,
                            b + "attn_k.weight": wk, b + "attn_v.weight": wv,
                            b + "attn_output.weight": sd[p + "attn.c_proj.weight"],
                            b + "ffn_norm.weight": sd[p + "ln_2.weight"], b + "ffn_gate.weight": gate,
                            b + "ffn_up.weight": up, b + "ffn_down.weight": sd[p + "mlp.c_proj.weight"]})
    else:
        writer.add_feed_forward_length(4 * c.n_embd)
        writer.add_layer_norm_eps(1e-5)
        tensors["position_embd.weight"] = sd["wpe.weight"]
        for i in range(c.n_layer):
            p, b = f"blocks.{i}.", f"blk.{i}."
            for ours, theirs in (("ln_1", "attn_norm"), ("ln_2", "ffn_norm")):
                tensors[b + f"{theirs}.weight"] = sd[p + f"{ours}.weight"]
                tensors[b + f"{theirs}.bias"] = sd.get(p + f"{ours}.bias", np.zeros(c.n_embd, np.float32))
            for ours, theirs in (("attn.c_attn", "attn_qkv"), ("attn.c_proj", "attn_output"), ("mlp.c_fc", "ffn_up"),
                                 ("mlp.c_proj", "ffn_down")):
                w = sd[p + f"{ours}.weight"]
                tensors[b + f"{theirs}.weight"] = w
                tensors[b + f"{theirs}.bias"] = sd.get(p + f"{ours}.bias", np.zeros(w.shape[0], np.float32))
    tensors["output_norm.weight"] = sd["ln_f.weight"]
    if arch == "gpt2":
        tensors["output_norm.bias"] = sd.get("ln_f.bias", np.zeros(c.n_embd, np.float32))
    tensors["output.weight"] = sd["lm_head.weight"]
    _gguf_vocabulary(writer, tok)
    for tensor_name, array in tensors.items():
        writer.add_tensor(tensor_name, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# ----------------------------------------------------------------------------- llama2.c

LLAMA2C_MAGIC = 0x616B3432  # "ak42"


def write_llama2c(model, tok, folder, version=0):
    """model.bin and tokenizer.bin for llama2.c. version 0 is the layout run.c reads (a 7-int header, a negative
    vocab_size when the classifier is not shared); version 1 is export.py's 256-byte header with the magic."""
    _check_exportable(model)
    c = model.config
    if c.recipe != "modern":
        raise ExportError("llama2.c runs Llama-architecture models: only the modern recipe can be exported to it")
    if c.bias:
        raise ExportError("llama2.c has no biases: only a model trained with bias=False can be exported to it")
    if c.rope_theta != 10000.0:
        raise ExportError(f"llama2.c's run.c hard-codes RoPE theta 10000; this model uses {c.rope_theta:g}")
    if tok.spec["kind"] != "sentencepiece":
        raise ExportError(f"llama2.c's tokenizer.bin is SentencePiece-style; the model's tokenizer is {tok.spec['kind']}")
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    L, C, hidden, head = c.n_layer, c.n_embd, _swiglu_hidden(model), c.n_embd // c.n_head
    split = [sd[f"blocks.{i}.attn.c_attn.weight"].split(C) for i in range(L)]
    mlp = [sd[f"blocks.{i}.mlp.c_fc.weight"].chunk(2) for i in range(L)]
    parts = {"wq": [s[0] for s in split], "wk": [s[1] for s in split], "wv": [s[2] for s in split],
             "wo": [sd[f"blocks.{i}.attn.c_proj.weight"] for i in range(L)], "w1": [m[0] for m in mlp],
             "w2": [sd[f"blocks.{i}.mlp.c_proj.weight"] for i in range(L)], "w3": [m[1] for m in mlp],
             "att_norm": [sd[f"blocks.{i}.ln_1.weight"] for i in range(L)],
             "ffn_norm": [sd[f"blocks.{i}.ln_2.weight"] for i in range(L)]}
    shared = c.tie_weights
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "model.bin"), "wb") as f:
        def put(*tensors):
            for t in tensors:
                f.write(t.contiguous().numpy().astype("<f4").tobytes())
        if version == 0:
            f.write(struct.pack("7i", C, hidden, L, c.n_head, c.n_head, c.vocab_size if shared else -c.vocab_size,
                                c.block_size))
            put(sd["wte.weight"], *parts["att_norm"], *parts["wq"], *parts["wk"], *parts["wv"], *parts["wo"],
                *parts["ffn_norm"], *parts["w1"], *parts["w2"], *parts["w3"], sd["ln_f.weight"])
            put(torch.zeros(c.block_size * head // 2), torch.zeros(c.block_size * head // 2))  # old freq_cis slots
        else:
            header = struct.pack("<Ii7iB", LLAMA2C_MAGIC, 1, C, hidden, L, c.n_head, c.n_head, c.vocab_size,
                                 c.block_size, int(shared))
            f.write(header + b"\0" * (256 - len(header)))
            put(*parts["att_norm"], *parts["ffn_norm"], sd["ln_f.weight"], sd["wte.weight"], *parts["wq"],
                *parts["wk"], *parts["wv"], *parts["wo"], *parts["w1"], *parts["w2"], *parts["w3"])
        if not shared:
            put(sd["lm_head.weight"])
    write_llama2c_tokenizer(tok, os.path.join(folder, "tokenizer.bin"))


def write_llama2c_tokenizer(tok, path):
    """run.c's tokenizer.bin: max token length, then per id a float score, an int length and the piece's bytes
    (with "▁" as a space, as llama2.c's tokenizer.py writes it)."""
    proto = _sentencepiece_proto(tok)
    pieces = []
    for i, p in enumerate(proto.pieces):
        text = "\n<s>\n" if i == tok.bos_id else "\n</s>\n" if i == tok.eos_id else p.piece.replace("▁", " ")
        pieces.append((p.score, text.encode("utf-8")))
    with open(path, "wb") as f:
        f.write(struct.pack("I", max(len(b) for _, b in pieces)))
        for score, data in pieces:
            f.write(struct.pack("fI", score, len(data)) + data)


def read_llama2c(folder):
    """(header dict, {name: float32 array}) of a model.bin written by write_llama2c (either version)."""
    with open(os.path.join(folder, "model.bin"), "rb") as f:
        data = f.read()
    if struct.unpack_from("<I", data)[0] == LLAMA2C_MAGIC:
        _, version, C, hidden, L, H, KV, V, T, shared = struct.unpack_from("<Ii7iB", data)
        offset = 256
        order = ["att_norm", "ffn_norm", "final_norm", "wte", "wq", "wk", "wv", "wo", "w1", "w2", "w3"]
    else:
        version, (C, hidden, L, H, KV, V, T) = 0, struct.unpack_from("7i", data)
        shared, V, offset = V > 0, abs(V), 28
        order = ["wte", "att_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3", "final_norm", "freq_cos",
                 "freq_sin"]
    head = C // H
    shapes = {"wte": (V, C), "att_norm": (L, C), "ffn_norm": (L, C), "final_norm": (C,), "wq": (L, C, C),
              "wk": (L, C, C), "wv": (L, C, C), "wo": (L, C, C), "w1": (L, hidden, C), "w2": (L, C, hidden),
              "w3": (L, hidden, C), "freq_cos": (T * head // 2,), "freq_sin": (T * head // 2,)}
    floats = np.frombuffer(data, dtype="<f4", offset=offset)
    weights, at = {}, 0
    for name in order + ([] if shared else ["wcls"]):
        shape = shapes.get(name, (V, C))
        n = int(np.prod(shape))
        weights[name] = floats[at:at + n].reshape(shape)
        at += n
    if at != len(floats):
        raise ValueError(f"{folder}/model.bin: {len(floats) - at} floats left over after the weights")
    header = dict(version=version, dim=C, hidden_dim=hidden, n_layers=L, n_heads=H, n_kv_heads=KV, vocab_size=V,
                  seq_len=T, shared_classifier=bool(shared))
    return header, weights
