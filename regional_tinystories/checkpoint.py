"""
Checkpoints: atomic saves, and loading (a checkpoint, or a ready model with its tokenizer) from a run folder, a
.pt file, or a Hugging Face hub file, with model_args and weights checked before a model is built from them.
Other programs' models load the same way, converted on the fly (regional_tinystories.convert): "gpt2" ...
"gpt2-xl" and local transformers folders (Llama or GPT-2 architecture) through transformers, and nanoGPT .pt
checkpoints (the original Regional-TinyStories publishes those) with the tokenizer named by `tokenizer`.

A checkpoint is a dict of plain values and tensors (loadable with weights_only=True): model_args, model,
optimizer, scaler, config, tokenizer (spec + file bytes), rng, data_rng, and the fields of the training script's
state dataclass (iter_num, tokens_seen, best_val_loss, ...; see training.TrainState).
"""
import dataclasses
import os

import torch

from regional_tinystories import convert
from regional_tinystories import tokenizer as tk
from regional_tinystories.errors import InputError, one_line
from regional_tinystories.files import atomic_write
from regional_tinystories.model import GPT, ModelConfig

MODEL_FIELDS = {f.name: type(f.default) for f in dataclasses.fields(ModelConfig)}
REQUIRED_MODEL_ARGS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "recipe")
RECIPES = ("classic", "modern")
GPT2_MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")  # init_from names, as in nanoGPT


class CheckpointError(InputError):
    pass


def save_atomic(obj, path):
    """Write to a temp file in the same folder, flush it to disk, then rename: a kill at any moment leaves either
    the old checkpoint or the new one, never a torn file."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def resolve(source, default_name="ckpt_best.pt"):
    """A run folder, a .pt path, or hf:OWNER/REPO/PATH/IN/REPO.pt -> a local file path."""
    if source.startswith("hf:"):
        return download_from_hf(source[3:])
    path = os.path.join(source, default_name) if os.path.isdir(source) else source
    if os.path.isdir(source) and not os.path.isfile(path):
        alt = os.path.join(source, "ckpt_last.pt")
        path = alt if os.path.isfile(alt) else path
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path}: not found")
    return path


def download_from_hf(spec):
    """'owner/repo/file.pt' -> local cached path (the seed's load_from_hf). The hub token, if needed, comes
    from the HF_TOKEN environment variable, never from a config."""
    parts = spec.split("/")
    if len(parts) < 3:
        raise CheckpointError(f"checkpoint hf:{spec}: expected hf:OWNER/REPO/FILE.pt")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    from huggingface_hub import hf_hub_download
    try:
        return hf_hub_download(repo_id=repo_id, filename=filename)
    except Exception as e:  # offline, unknown repo, gated, missing file
        raise CheckpointError(f"checkpoint hf:{spec}: download failed ({one_line(e)})") from None


def load(source, default_name="ckpt_best.pt", map_location="cpu", tokenizer=""):
    """A checkpoint dict with its "path". source: a run folder, a .pt file, hf:OWNER/REPO/FILE.pt, a GPT-2 name or
    a transformers model folder; tokenizer: the tokenizer of a checkpoint that carries none (nanoGPT's)."""
    if source in GPT2_MODELS or (os.path.isdir(source) and os.path.isfile(os.path.join(source, "config.json"))):
        return import_transformers(source)
    path = resolve(source, default_name)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path}: cannot be read ({one_line(e)})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise CheckpointError(f"checkpoint {path}: not a Regional TinyStories checkpoint (no model / model_args)")
    if is_nanogpt(ckpt):
        return import_nanogpt(ckpt, path, tokenizer)
    ckpt["path"] = path
    return ckpt


def is_nanogpt(ckpt):
    """nanoGPT names its weights transformer.h.N... (behind torch.compile's _orig_mod. maybe); this project does not."""
    keys = ckpt["model"].keys() if isinstance(ckpt["model"], dict) else []
    return any(str(k).removeprefix("_orig_mod.").startswith("transformer.") for k in keys)


def import_nanogpt(ckpt, path, tokenizer_name):
    try:
        model_args, state = convert.from_nanogpt(ckpt, f"checkpoint {path}")
    except InputError as e:
        raise CheckpointError(str(e)) from None
    if not tokenizer_name:
        raise CheckpointError(f"checkpoint {path}: a nanoGPT checkpoint carries no tokenizer; name it with "
                              f"--tokenizer= (e.g. tiktoken:gpt2, sarvam, sutra, hf:DIR)")
    tok = tk.load_tokenizer(tk.parse_name(tokenizer_name))
    # nanoGPT pads GPT-2's 50257 ids to 50304 rows: a tokenizer may use fewer ids than the model has rows
    if tok.vocab_size > model_args["vocab_size"]:
        raise CheckpointError(f"checkpoint {path}: the model has {model_args['vocab_size']} token rows but tokenizer "
                              f"{tokenizer_name} has {tok.vocab_size} ids: not this model's tokenizer")
    return {"model_args": model_args, "model": state, "tokenizer": tk.export(tok), "path": path,
            "config": {k: v for k, v in (ckpt.get("config") or {}).items() if isinstance(v, (str, int, float, bool))}}


def import_transformers(source):
    """A Llama- or GPT-2-architecture transformers model (hub name or local folder) as a checkpoint dict; its
    tokenizer's files go into the checkpoint, so nothing needs the hub again."""
    from transformers import AutoModelForCausalLM
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    except Exception as e:  # offline hub, unknown name, missing files
        raise CheckpointError(f"model {source}: could not be loaded through transformers ({one_line(e)})") from None
    try:
        model_args, state = convert.from_hf(hf_model)
    except InputError as e:
        raise CheckpointError(f"model {source}: {e}") from None
    tok = tk.load_hf_tokenizer({"kind": "hf", "name": source}, source)
    return {"model_args": model_args, "model": state, "tokenizer": tk.export(tok), "path": source}


def model_args_problem(args):
    """Why these model settings (n_layer, n_head, n_embd, recipe, ...) cannot build a model, or None."""
    for key in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
        if key in args and args[key] < 1:
            return f"{key}={args[key]} must be at least 1"
    if "recipe" in args and args["recipe"] not in RECIPES:
        return f"recipe={args['recipe']!r} is not one of {', '.join(map(repr, RECIPES))}"
    if "dropout" in args and not 0 <= args["dropout"] < 1:
        return f"dropout={args['dropout']} must be in [0, 1)"
    if args["n_embd"] % args["n_head"]:
        return f"n_embd={args['n_embd']} must be a multiple of n_head={args['n_head']}"
    if args.get("recipe") == "modern" and (args["n_embd"] // args["n_head"]) % 2:
        return (f"n_embd / n_head = {args['n_embd'] // args['n_head']} must be even for the modern recipe "
                f"(RoPE rotates pairs of dimensions)")
    return None


def model_config(ckpt):
    """The ModelConfig of a checkpoint, refusing model_args that are unknown, missing or of the wrong type."""
    where, args = f"checkpoint {ckpt['path']}", ckpt["model_args"]
    if not isinstance(args, dict):
        raise CheckpointError(f"{where}: model_args is a {type(args).__name__}, not a dict")
    unknown = sorted(set(args) - set(MODEL_FIELDS))
    missing = [key for key in REQUIRED_MODEL_ARGS if key not in args]
    if unknown or missing:
        what = [f"unknown model_args {', '.join(map(str, unknown))}"] * bool(unknown) + \
            [f"no model_args {', '.join(missing)}"] * bool(missing)
        raise CheckpointError(f"{where}: {'; '.join(what)} (written by another program?)")
    for key, value in args.items():
        expected = MODEL_FIELDS[key]
        if type(value) is not expected and not (expected is float and type(value) is int):
            raise CheckpointError(f"{where}: model_args {key}={value!r} is a {type(value).__name__}, expected "
                                  f"{expected.__name__}")
    problem = model_args_problem(args)
    if problem:
        raise CheckpointError(f"{where}: model_args {problem}")
    return ModelConfig(**args)


def build_model(ckpt, **changes):
    """GPT with the checkpoint's weights; changes (e.g. dropout) replace model_args that do not affect shapes.
    Weights whose names or shapes disagree with model_args are refused in one line."""
    config = dataclasses.replace(model_config(ckpt), **changes)
    model = GPT(config)
    weights = ckpt["model"]
    if not isinstance(weights, dict) or not all(isinstance(t, torch.Tensor) for t in weights.values()):
        raise CheckpointError(f"checkpoint {ckpt['path']}: 'model' is not a dict of tensors")
    weights = clean_state_dict(weights)
    expected = model.state_dict()
    mismatches = [f"no {name}" for name in expected if name not in weights] + \
        [f"unexpected {name}" for name in weights if name not in expected] + \
        [f"{name} is {shape(weights[name])}, model_args give {shape(t)}" for name, t in expected.items()
         if name in weights and weights[name].shape != t.shape]
    if mismatches:
        more = f" and {len(mismatches) - 1} more" if len(mismatches) > 1 else ""
        raise CheckpointError(f"checkpoint {ckpt['path']}: weights do not match its model_args "
                              f"({mismatches[0]}{more})")
    model.load_state_dict(weights)
    return model


def shape(tensor):
    return "x".join(map(str, tensor.shape)) or "a scalar"


def clean_state_dict(state_dict):
    """Strip the prefixes torch.compile ('_orig_mod.') and DDP ('module.') add to parameter names."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("_orig_mod.", "module."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_model(source, device="cpu", tokenizer=""):
    """(model in eval mode on device, tokenizer, checkpoint dict) from anything load() reads."""
    ckpt = load(source, map_location=device, tokenizer=tokenizer)
    model = build_model(ckpt)
    model.to(device).eval()
    if "tokenizer" not in ckpt:
        raise CheckpointError(f"checkpoint {ckpt['path']}: no tokenizer recorded")
    return model, tk.from_export(ckpt["tokenizer"]), ckpt
