"""
Checkpoints: atomic saves, and loading (a checkpoint, or a ready model with its tokenizer) from a run folder, a
.pt file, or a Hugging Face hub file.

A checkpoint is a dict of plain values and tensors (loadable with weights_only=True): model_args, model,
optimizer, scaler, iter_num, tokens_seen, best_val_loss, config, tokenizer (spec + file bytes), rng, data_rng.
"""
import os

import torch

from regional_tinystories import tokenizer as tk
from regional_tinystories.errors import one_line
from regional_tinystories.model import GPT, ModelConfig


class CheckpointError(Exception):
    pass


def save_atomic(obj, path):
    """Write to a temp file in the same folder, flush it to disk, then rename: a kill at any moment leaves either
    the old checkpoint or the new one, never a torn file."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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


def load(source, default_name="ckpt_best.pt", map_location="cpu"):
    path = resolve(source, default_name)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path}: cannot be read ({one_line(e)})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise CheckpointError(f"checkpoint {path}: not a Regional TinyStories checkpoint (no model / model_args)")
    ckpt["path"] = path
    return ckpt


def clean_state_dict(state_dict):
    """Strip the prefixes torch.compile ('_orig_mod.') and DDP ('module.') add to parameter names."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("_orig_mod.", "module."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_model(source, device="cpu"):
    """(model in eval mode on device, tokenizer, checkpoint dict) from a run folder, .pt file or hf: path."""
    ckpt = load(source, map_location=device)
    model = GPT(ModelConfig(**ckpt["model_args"]))
    model.load_state_dict(clean_state_dict(ckpt["model"]))
    model.to(device).eval()
    if "tokenizer" not in ckpt:
        raise CheckpointError(f"checkpoint {ckpt['path']}: no tokenizer recorded")
    return model, tk.from_export(ckpt["tokenizer"]), ckpt
