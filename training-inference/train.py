"""
Train a small story language model on a prepared dataset (see data/prepare.py).

    python training-inference/train.py configs/micro.py --dataset=demo-hindi --max_iters=500
    torchrun --standalone --nproc_per_node=4 training-inference/train.py configs/gpt-512x6.py

Runs on CPU, one GPU, or many through torchrun (DDP). Every eval_interval it logs train/val loss, perplexity and
bits-per-byte, and writes ckpt_last.pt (and ckpt_best.pt when validation improves) atomically into out_dir.
init_from='resume' continues exactly where ckpt_last.pt stopped: same batches, same dropout, same result.
"""
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import torch
from tqdm import tqdm

from regional_tinystories import checkpoint, runtime
from regional_tinystories import tokenizer as tk
from regional_tinystories.config import ConfigError, load_config
from regional_tinystories.dataset import (
    DatasetError,
    bits_per_byte,
    check_split,
    load_meta,
)
from regional_tinystories.errors import one_line
from regional_tinystories.model import GPT, ModelConfig
from regional_tinystories.plots import plot_loss_curves

DEFAULTS = dict(
    # I/O
    out_dir="out/run",
    dataset="demo-hindi",          # folder under data_root written by prepare.py
    data_root="data",
    init_from="scratch",           # 'scratch', 'resume' (out_dir/ckpt_last.pt), a .pt path or run folder, hf:OWNER/REPO/FILE.pt
    eval_interval=200,
    eval_iters=20,                 # batches per split for each evaluation
    log_interval=10,
    eval_only=False,
    always_save_checkpoint=True,   # write ckpt_last.pt at every evaluation (ckpt_best.pt only on improvement)
    wandb_mode="disabled",         # 'online' (needs WANDB_API_KEY in the environment), 'offline', 'disabled'
    wandb_project="regional-tinystories",
    wandb_run_name="",
    # data
    batch_size=32,
    block_size=256,
    gradient_accumulation_steps=1,  # total across ranks; each of N ranks does 1/N of it
    doc_aligned=False,             # windows start at <bos> instead of anywhere
    # model
    recipe="modern",               # 'classic' (GPT-2) or 'modern' (RoPE, RMSNorm, SwiGLU)
    n_layer=4,
    n_head=4,
    n_embd=128,
    dropout=0.0,
    bias=False,
    qk_norm=False,
    tie_weights=True,
    # optimizer: AdamW, weight decay on 2-D weights only
    learning_rate=1e-3,
    max_iters=2000,
    weight_decay=0.1,
    beta1=0.9,
    beta2=0.95,
    grad_clip=1.0,                 # 0 disables clipping
    # learning-rate schedule
    lr_schedule="cosine",          # 'cosine', 'wsd' (warmup-stable-decay), 'constant'
    warmup_iters=100,
    lr_decay_iters=None,           # defaults to max_iters
    min_lr=1e-4,
    wsd_decay_fraction=0.2,        # wsd: the last 20% of lr_decay_iters decays linearly to min_lr
    # early stopping on validation loss
    early_stop_patience=0,         # evaluations without improvement before stopping; 0 = off
    early_stop_min_delta=0.0,
    # system
    device="auto",                 # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
    dtype="auto",                  # 'auto', 'float32', 'bfloat16', 'float16'
    compile=False,
    seed=1337,
)
CHOICES = dict(recipe=("classic", "modern"), lr_schedule=("cosine", "wsd", "constant"),
               dtype=("auto", "float32", "bfloat16", "float16"), wandb_mode=("online", "offline", "disabled"))


class BatchSampler:
    """Random (x, y) windows of block_size tokens from one split. doc_aligned windows start at a <bos>.
    Positions come from a seeded torch.Generator whose state is saved in checkpoints for exact resume."""

    def __init__(self, data_dir, meta, split, block_size, batch_size, seed, doc_aligned=False):
        self.path = os.path.join(data_dir, f"{split}.bin")
        self.dtype = np.dtype(meta["dtype"])
        self.block_size, self.batch_size = block_size, batch_size
        n = os.path.getsize(self.path) // self.dtype.itemsize
        if n <= block_size + 1:
            raise DatasetError(f"{self.path}: {n} tokens is too few for block_size {block_size}; "
                               f"use a smaller block_size or more data")
        self.starts = None
        if doc_aligned:
            data = np.memmap(self.path, dtype=self.dtype, mode="r")
            starts = np.flatnonzero(data[: n - block_size - 1] == meta["bos_id"])
            if len(starts) == 0:
                raise DatasetError(f"{self.path}: no <bos> leaves room for a window of {block_size} tokens")
            self.starts = torch.from_numpy(starts.astype(np.int64))
        self.n = n
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self):
        if self.starts is not None:
            pick = torch.randint(len(self.starts), (self.batch_size,), generator=self.generator)
            ix = self.starts[pick]
        else:
            ix = torch.randint(self.n - self.block_size - 1, (self.batch_size,), generator=self.generator)
        # a fresh memmap per batch avoids the memory growth of a long-lived one (as in nanoGPT)
        data = np.memmap(self.path, dtype=self.dtype, mode="r")
        rows = np.stack([data[i:i + self.block_size + 1] for i in ix.tolist()]).astype(np.int64)
        batch = torch.from_numpy(rows)
        return batch[:, :-1], batch[:, 1:]


def learning_rate_at(it, cfg):
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    if cfg.lr_schedule == "wsd":
        decay_start = decay_iters - int(cfg.wsd_decay_fraction * decay_iters)
        if it < decay_start:
            return cfg.learning_rate
        ratio = min(1.0, (it - decay_start) / max(1, decay_iters - decay_start))
        return cfg.learning_rate - ratio * (cfg.learning_rate - cfg.min_lr)
    if it >= decay_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)


def make_optimizer(model, cfg, device):
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]  # norms and biases
    fused = device.startswith("cuda")
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=fused)


def load_dataset_meta(cfg):
    data_dir = os.path.join(cfg.data_root, cfg.dataset)
    meta = load_meta(data_dir)
    problems = check_split(data_dir, meta, "train", full=False) + check_split(data_dir, meta, "val", full=False)
    if problems:
        raise DatasetError(str(problems[0]) + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""))
    return data_dir, meta


def build_model(cfg, meta, log):
    """Model from scratch, from a checkpoint to fine-tune, or the checkpoint to resume. Returns (model, ckpt)."""
    ckpt = None
    if cfg.init_from == "resume":
        ckpt = checkpoint.load(os.path.join(cfg.out_dir, "ckpt_last.pt"))
    elif cfg.init_from != "scratch":
        ckpt = checkpoint.load(cfg.init_from, default_name="ckpt_last.pt")
    if ckpt is None:
        args = ModelConfig(vocab_size=meta["vocab_size"], block_size=cfg.block_size, n_layer=cfg.n_layer,
                           n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias,
                           recipe=cfg.recipe, qk_norm=cfg.qk_norm, tie_weights=cfg.tie_weights)
    else:
        args = ModelConfig(**ckpt["model_args"])
        args.dropout = cfg.dropout
        if args.vocab_size != meta["vocab_size"]:
            raise checkpoint.CheckpointError(
                f"checkpoint {ckpt['path']}: vocabulary {args.vocab_size} does not match dataset {cfg.dataset} "
                f"({meta['vocab_size']}); prepare the data with the checkpoint's tokenizer")
        if cfg.block_size > args.block_size:
            raise checkpoint.CheckpointError(f"checkpoint {ckpt['path']}: block_size {cfg.block_size} is larger "
                                             f"than the model's {args.block_size}")
        log(f"initialising from {ckpt['path']} (iteration {ckpt.get('iter_num', 0)})")
    model = GPT(args)
    if ckpt is not None:
        model.load_state_dict(checkpoint.clean_state_dict(ckpt["model"]))
    return model, ckpt


@torch.no_grad()
def estimate_loss(model, samplers, cfg, ctx, device):
    """Mean loss over the same eval_iters batches of each split every time (the eval samplers are re-seeded)."""
    model.eval()
    out = {}
    for split, sampler in samplers.items():
        sampler.generator.manual_seed(cfg.seed + 999)
        losses = torch.zeros(cfg.eval_iters)
        for k in range(cfg.eval_iters):
            x, y = (t.to(device) for t in sampler.next_batch())
            with ctx:
                _, loss = model(x, y)
            losses[k] = loss.item()
        out[split] = losses.mean().item()
    model.train()
    return out


def train(cfg):
    rank, local_rank, world_size = runtime.world_info()
    ddp = world_size > 1
    master = rank == 0
    log = (lambda msg: tqdm.write(msg)) if master else (lambda msg: None)
    device = runtime.pick_device(cfg.device)
    if ddp:
        import torch.distributed as dist
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
        if device.startswith("cuda"):
            device = f"cuda:{local_rank}"
            torch.cuda.set_device(device)
        else:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
        if cfg.gradient_accumulation_steps % world_size:
            raise ConfigError(f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} must be divisible by "
                              f"the {world_size} ranks")
    accum_steps = max(1, cfg.gradient_accumulation_steps // world_size)
    dtype = runtime.pick_dtype(cfg.dtype, device)
    ctx = runtime.autocast(device, dtype)
    runtime.seed_everything(cfg.seed)

    data_dir, meta = load_dataset_meta(cfg)
    model, ckpt = build_model(cfg, meta, log)
    model.to(device)
    block_size = model.config.block_size if ckpt is not None and cfg.init_from == "resume" else cfg.block_size
    tokens_per_iter = cfg.batch_size * block_size * accum_steps * world_size
    n_params, n_body = model.num_params(), model.num_params(non_embedding=True)
    log(f"model: {model.config.recipe}, {model.config.n_layer} layers x {model.config.n_embd} hidden, "
        f"{model.config.n_head} heads, vocab {model.config.vocab_size}: {n_params / 1e6:.2f}M parameters "
        f"({n_body / 1e6:.2f}M without embeddings)")
    log(f"device {device}, dtype {dtype}, {world_size} rank(s), {tokens_per_iter:,} tokens per iteration")

    optimizer = make_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(enabled=(dtype == "float16"))
    train_sampler = BatchSampler(data_dir, meta, "train", block_size, cfg.batch_size, cfg.seed + 1000 * rank,
                                 cfg.doc_aligned)
    eval_samplers = {s: BatchSampler(data_dir, meta, s, block_size, cfg.batch_size, 0, cfg.doc_aligned)
                     for s in ("train", "val")}
    iter_num, tokens_seen, best_val, bad_evals = 0, 0, float("inf"), 0
    if ckpt is not None and cfg.init_from == "resume":
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        iter_num, tokens_seen = ckpt["iter_num"], ckpt["tokens_seen"]
        best_val, bad_evals = ckpt["best_val_loss"], ckpt["evals_without_improvement"]
        runtime.set_rng_state(ckpt["rng"])
        data_rng = ckpt["data_rng"]
        if len(data_rng) != world_size:
            raise checkpoint.CheckpointError(f"checkpoint {ckpt['path']}: saved with {len(data_rng)} ranks, "
                                             f"resumed with {world_size}; resume with the same number of ranks")
        train_sampler.generator.set_state(data_rng[rank])
    ckpt = None  # free the memory

    tokenizer_export = tk.export(tk.load_tokenizer(meta["tokenizer"], data_dir))
    raw_model = model
    if cfg.compile:
        model = torch.compile(model)
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[local_rank] if device.startswith("cuda") else None)
    os.makedirs(cfg.out_dir, exist_ok=True)
    log_path = os.path.join(cfg.out_dir, "log.jsonl")
    log_file = open(log_path, "a", encoding="utf-8") if master else None
    wandb_run = start_wandb(cfg, log) if master else None
    flops_per_token = raw_model.flops_per_token()
    peak = runtime.peak_flops(device, dtype) if master else None

    def record(entry):
        if master:
            log_file.write(json.dumps(entry) + "\n")
            log_file.flush()
            if wandb_run is not None:
                wandb_run.log({k: v for k, v in entry.items() if k != "type"}, step=entry["iter"])

    def save(names, entry):
        """Write one checkpoint state (gathered from every rank once) to each of the named files."""
        data_states = [train_sampler.generator.get_state()]
        if ddp:
            data_states = [None] * world_size
            torch.distributed.all_gather_object(data_states, train_sampler.generator.get_state())
        if not master:
            return
        state = {"model_args": raw_model.model_args(), "model": raw_model.state_dict(),
                 "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                 "iter_num": iter_num, "tokens_seen": tokens_seen, "best_val_loss": best_val,
                 "evals_without_improvement": bad_evals, "val_loss": entry["val_loss"],
                 "val_bpb": entry["val_bpb"], "config": vars(cfg), "dataset": cfg.dataset,
                 "meta": meta, "tokenizer": tokenizer_export, "rng": runtime.rng_state(), "data_rng": data_states}
        for name in names:
            checkpoint.save_atomic(state, os.path.join(cfg.out_dir, name))

    def evaluate():
        nonlocal best_val, bad_evals
        losses = estimate_loss(model, eval_samplers, cfg, ctx, device)
        val = losses["val"]
        entry = {"type": "eval", "iter": iter_num, "tokens": tokens_seen, "train_loss": losses["train"],
                 "val_loss": val, "val_ppl": math.exp(min(val, 50)), "train_bpb": bits_per_byte(losses["train"], meta, "train"),
                 "val_bpb": bits_per_byte(val, meta, "val"), "time": time.time() - t_start}
        log(f"eval {iter_num}: train {losses['train']:.4f}, val {val:.4f}, val ppl {entry['val_ppl']:.2f}, "
            f"val bpb {entry['val_bpb']:.4f}")
        record(entry)
        if not (math.isfinite(val) and math.isfinite(losses["train"])):
            return entry  # never checkpoint a diverged model; the caller stops the run
        improved = val < best_val - cfg.early_stop_min_delta
        if improved:
            best_val, bad_evals = val, 0
        else:
            bad_evals += 1
        names = (["ckpt_best.pt"] if improved else []) + \
            (["ckpt_last.pt"] if cfg.always_save_checkpoint or improved else [])
        if iter_num > 0 and not cfg.eval_only and names:
            save(names, entry)
        return entry

    start_iter = iter_num
    t_start = time.time()
    last_eval, stop_reason = None, "max_iters"
    if cfg.eval_only:
        last_eval = evaluate()
        stop_reason = "eval_only"
    bar = tqdm(total=cfg.max_iters, initial=iter_num, desc="training", unit="it", disable=not master or None)
    t_last, tokens_at_last = time.time(), tokens_seen
    while iter_num < cfg.max_iters and not cfg.eval_only:
        if iter_num % cfg.eval_interval == 0 and (iter_num > start_iter or start_iter == 0):
            last_eval = evaluate()
            if not math.isfinite(last_eval["val_loss"]):
                loss_sum = last_eval["val_loss"]
                break
            if cfg.early_stop_patience and bad_evals >= cfg.early_stop_patience:
                stop_reason = f"early stop: no val improvement > {cfg.early_stop_min_delta} in {bad_evals} evals"
                break
        lr = learning_rate_at(iter_num, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = 0.0
        for micro in range(accum_steps):
            x, y = (t.to(device, non_blocking=True) for t in train_sampler.next_batch())
            sync = nullcontext() if not ddp or micro == accum_steps - 1 else model.no_sync()
            with sync:
                with ctx:
                    _, loss = model(x, y)
                loss = loss / accum_steps
                scaler.scale(loss).backward()
            loss_sum += loss.item()
        if not math.isfinite(loss_sum):
            break
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        iter_num += 1
        tokens_seen += tokens_per_iter
        bar.update(1)
        if iter_num % cfg.log_interval == 0 or iter_num == cfg.max_iters:
            dt = time.time() - t_last
            tok_per_s = (tokens_seen - tokens_at_last) / max(dt, 1e-9)
            mfu = flops_per_token * tok_per_s / world_size / peak if peak else 0.0
            record({"type": "train", "iter": iter_num, "tokens": tokens_seen, "loss": loss_sum, "lr": lr,
                    "tokens_per_s": tok_per_s, "mfu": mfu})
            bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{tok_per_s:,.0f}", mfu=f"{100 * mfu:.1f}%")
            t_last, tokens_at_last = time.time(), tokens_seen
    bar.close()
    if iter_num < cfg.max_iters and stop_reason == "max_iters":  # left the loop on a non-finite loss
        log(f"stopping: loss is {loss_sum} at iteration {iter_num}; the last good checkpoint in "
            f"{cfg.out_dir} is kept (lower learning_rate, or use float32)")
        stop_reason = "non-finite loss"
    if stop_reason == "max_iters" and (last_eval is None or last_eval["iter"] != iter_num):
        last_eval = evaluate()
    elapsed = time.time() - t_start
    if master:
        log_file.close()
        finish(cfg, meta, raw_model, last_eval, iter_num, tokens_seen, best_val, elapsed, stop_reason, log_path, log)
        if wandb_run is not None:
            wandb_run.finish()
    if ddp:
        torch.distributed.destroy_process_group()
    return stop_reason


def start_wandb(cfg, log):
    if cfg.wandb_mode == "disabled":
        return None
    try:
        import wandb
        return wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name or None, config=vars(cfg),
                          mode=cfg.wandb_mode, dir=cfg.out_dir)
    except Exception as e:  # training never depends on wandb
        log(f"warning: wandb disabled ({one_line(e)})")
        return None


def finish(cfg, meta, model, last_eval, iter_num, tokens_seen, best_val, elapsed, stop_reason, log_path, log):
    png = plot_loss_curves([(cfg.dataset, log_path)], os.path.join(cfg.out_dir, "loss.png"),
                           title=f"{cfg.dataset}: {model.num_params() / 1e6:.2f}M params")
    summary = {"dataset": cfg.dataset, "out_dir": cfg.out_dir, "iters": iter_num, "tokens": tokens_seen,
               "params": model.num_params(), "params_non_embedding": model.num_params(non_embedding=True),
               "n_layer": model.config.n_layer, "n_embd": model.config.n_embd, "n_head": model.config.n_head,
               "recipe": model.config.recipe, "vocab_size": model.config.vocab_size,
               "tokenizer": meta["tokenizer_name"], "learning_rate": cfg.learning_rate, "warmup_iters": cfg.warmup_iters,
               "final_val_loss": last_eval["val_loss"] if last_eval else None,
               "final_val_bpb": last_eval["val_bpb"] if last_eval else None,
               "best_val_loss": best_val if best_val != float("inf") else None,
               "best_val_bpb": bits_per_byte(best_val, meta, "val") if best_val != float("inf") else None,
               "seconds": elapsed, "stop_reason": stop_reason}
    tmp = os.path.join(cfg.out_dir, "summary.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    os.replace(tmp, os.path.join(cfg.out_dir, "summary.json"))
    val = "no eval"
    if last_eval:
        val = f"val loss {summary['final_val_loss']:.4f} (bpb {summary['final_val_bpb']:.4f})"
        if summary["best_val_loss"] is not None and summary["best_val_loss"] < summary["final_val_loss"]:
            val += f", best {summary['best_val_loss']:.4f} (bpb {summary['best_val_bpb']:.4f}) in ckpt_best.pt"
    log(f"done ({stop_reason}): {iter_num} iters, {tokens_seen:,} tokens in {elapsed:.0f}s, {val}, "
        f"{summary['params'] / 1e6:.2f}M params -> {cfg.out_dir}/ (ckpt_best.pt, ckpt_last.pt, log.jsonl, {os.path.basename(png)})")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = SimpleNamespace(**load_config(DEFAULTS, argv, CHOICES, __doc__))
        if runtime.world_info()[0] == 0:
            print("config: " + json.dumps(vars(cfg)))
        reason = train(cfg)
    except (ConfigError, DatasetError, checkpoint.CheckpointError, tk.TokenizerError) as e:
        sys.exit(f"error: {e}")
    if reason == "non-finite loss":
        sys.exit(1)


if __name__ == "__main__":
    main()
