"""
What a training script shares with the others written in its shape (train.py, distill.py, finetune_reward.py).
Each script keeps its own settings and its own loop; from here it takes

  settings    check_settings (ranges, device), resume_settings (a resumed run keeps its own settings),
              fine_tune_settings (a model initialised from a checkpoint keeps its architecture), starting_point
              (the settings and checkpoint a run starts from), accumulation_steps (micro-batches per rank)
  data        open_dataset (meta.json and .bin checks), BatchSampler (seeded random windows of a split)
  training    new_model (a GPT from the settings), learning_rate_at (cosine / wsd / constant), make_optimizer
              (AdamW with weight decay on matrices only, or Muon on the blocks' matrices with AdamW on the rest)
  evaluation  evaluate: the mean loss of each split on fixed batches, with perplexity and bits per byte
  the loop    the steps each script's loop takes in the same way: record_evaluation (log it, early stopping, which
              checkpoints to write), elapsed_seconds (the rank-slowest clock), stop_reason, checkpoints_to_write,
              set_learning_rate, optimizer_step (clip, scaler step), stop_diverged, tokens_per_second
  state       TrainState, the run's counters and decisions, saved whole in every checkpoint (save_checkpoint)
              and restored whole with the optimizer, RNG and data-generator states (resume_state)
  output      prepare_out_dir (stale temp files), RunLog (log.jsonl + wandb), open_run_log (both), write_summary
              (summary.json, loss.png), report_signal_stop (the line that says how to resume), sha256_of_files
  stopping    StopSignals: SIGINT / SIGTERM end the loop after the current iteration, so it can save first
"""
import hashlib
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from regional_tinystories import checkpoint, runtime
from regional_tinystories import tokenizer as tk
from regional_tinystories.checkpoint import CheckpointError
from regional_tinystories.config import ConfigError, check_value
from regional_tinystories.dataset import (
    DatasetError,
    bits_per_byte,
    check_split,
    load_meta,
)
from regional_tinystories.errors import InputError, one_line
from regional_tinystories.files import (
    remove_stale_temp_files,
    write_json_atomic,
    write_jsonl_atomic,
)
from regional_tinystories.model import GPT, ModelConfig
from regional_tinystories.plots import plot_loss_curves

# ----------------------------------------------------------------------------- settings

# What a resumed run may change: how long it runs, how it is evaluated, logged and saved, and where it runs. Any
# other setting would make the rest of the run a different run from the one in the checkpoint.
RESUME_MAY_CHANGE = ("max_iters", "max_seconds", "eval_interval", "log_interval", "eval_iters", "eval_only",
                     "always_save_checkpoint",
                     "early_stop_patience", "early_stop_min_delta", "wandb_mode", "wandb_project", "wandb_run_name",
                     "data_root", "device", "compile")
# What a model initialised from a checkpoint takes from it (block_size may shrink; dropout may change)
ARCHITECTURE = ("n_layer", "n_head", "n_embd", "recipe", "bias", "qk_norm", "tie_weights")

AT_LEAST = dict(batch_size=1, block_size=1, gradient_accumulation_steps=1, n_layer=1, n_head=1, n_embd=1,
                eval_interval=1, log_interval=1, eval_iters=1, max_iters=0, warmup_iters=0, lr_decay_iters=1,
                early_stop_patience=0)
NOT_NEGATIVE = ("max_seconds", "min_lr", "weight_decay", "grad_clip", "early_stop_min_delta")
FRACTIONS = dict(beta1=False, beta2=False, muon_momentum=False, wsd_decay_fraction=True)  # [0, 1), or [0, 1]


def setting_problem(settings):
    """The first setting that is out of range (one line), or None. Only the keys present are checked."""
    for key, value in settings.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"{key}={value} must be a finite number"
    for key, least in AT_LEAST.items():
        if settings.get(key) is not None and settings[key] < least:
            return f"{key}={settings[key]} must be at least {least}"
    for key in ("learning_rate", "muon_lr"):
        if key in settings and settings[key] <= 0:
            return f"{key}={settings[key]} must be positive"
    for key in NOT_NEGATIVE:
        if key in settings and settings[key] < 0:
            return f"{key}={settings[key]} must not be negative"
    for key, closed in FRACTIONS.items():
        if key in settings and not (0 <= settings[key] < 1 or (closed and settings[key] == 1)):
            return f"{key}={settings[key]} must be in [0, {'1]' if closed else '1)'}"
    if "n_embd" in settings:
        problem = checkpoint.model_args_problem(settings)
        if problem:
            return problem
    if "device" in settings:
        return runtime.device_problem(settings["device"])
    return None


def check_settings(settings):
    problem = setting_problem(settings)
    if problem:
        raise ConfigError(problem)


def resume_settings(ckpt, given, defaults, choices=None, types=None, may_change=RESUME_MAY_CHANGE):
    """The settings of the run saved in ckpt, with the given ones that differ applied where may_change (by default
    RESUME_MAY_CHANGE) allows: (settings, [(key, saved value, new value)]). Any other difference is refused, all of
    them in one line. Saved keys this script no longer has are ignored; keys it has gained take their defaults."""
    saved = ckpt.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"checkpoint {ckpt['path']}: records no config, so it cannot be resumed")
    source = f"checkpoint {ckpt['path']} config"
    settings = {**defaults, **{key: check_value(key, value, defaults, choices, types, source)
                               for key, value in saved.items() if key in defaults},
                "init_from": "resume", "out_dir": given.get("out_dir", defaults["out_dir"])}
    changes = [(key, settings[key], value) for key, value in given.items()
               if key not in ("init_from", "out_dir") and value != settings[key]]
    refused = [f"{key}={new!r} (the run has {old!r})" for key, old, new in changes if key not in may_change]
    if refused:
        raise ConfigError(f"resume from {ckpt['path']}: {', '.join(refused)} would make it a different run; only "
                          f"{', '.join(may_change)} may change on resume (train into a new out_dir instead)")
    settings.update({key: new for key, _, new in changes})
    return settings, changes


def fine_tune_settings(ckpt, settings, given):
    """Settings for a run initialised from ckpt's weights: the architecture is the checkpoint's (a given one that
    differs is refused), block_size defaults to the model's and may be smaller."""
    args = checkpoint.model_config(ckpt)
    settings = dict(settings)
    differ = [f"{key}={given[key]!r} (the model has {getattr(args, key)!r})" for key in ARCHITECTURE
              if key in given and given[key] != getattr(args, key)]
    if differ:
        raise ConfigError(f"init_from={ckpt['path']}: {', '.join(differ)}; a model initialised from a checkpoint "
                          f"keeps its architecture")
    settings.update({key: getattr(args, key) for key in ARCHITECTURE})
    settings["block_size"] = given.get("block_size", args.block_size)
    if settings["block_size"] > args.block_size:
        raise ConfigError(f"checkpoint {ckpt['path']}: block_size {settings['block_size']} is larger than the "
                          f"model's {args.block_size}")
    return settings


def starting_point(given, defaults, choices=None, types=None):
    """(settings, checkpoint or None, resume changes) of a run given these settings: init_from='scratch' starts from
    the defaults with the given ones applied; 'resume' takes the run saved in out_dir/ckpt_last.pt with what
    resume_settings lets change ([(key, saved value, new value)]); anything else is a checkpoint to start from, whose
    architecture the run keeps (fine_tune_settings)."""
    settings = {**defaults, **given}
    if settings["init_from"] == "resume":
        ckpt = checkpoint.load(os.path.join(settings["out_dir"], "ckpt_last.pt"))
        settings, changes = resume_settings(ckpt, given, defaults, choices, types)
        return settings, ckpt, changes
    if settings["init_from"] != "scratch":
        ckpt = checkpoint.load(settings["init_from"], default_name="ckpt_last.pt", tokenizer=settings["tokenizer"])
        return fine_tune_settings(ckpt, settings, given), ckpt, []
    return settings, None, []


def accumulation_steps(cfg, world_size):
    """Micro-batches per optimizer step on each rank: gradient_accumulation_steps is the total across the ranks."""
    if cfg.gradient_accumulation_steps % world_size:
        raise InputError(f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} must be divisible by "
                         f"the {world_size} ranks")
    return max(1, cfg.gradient_accumulation_steps // world_size)


# ----------------------------------------------------------------------------- data

def open_dataset(data_dir, splits=("train", "val")):
    """meta.json of a prepared dataset whose .bin files have been checked against it (sizes, first and last
    tokens, token ids inside the vocabulary)."""
    meta = load_meta(data_dir)
    problems = [problem for split in splits for problem in check_split(data_dir, meta, split, full=False)]
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DatasetError(problems[0] + more)
    for split in splits:
        counts = meta["splits"][split]
        if not counts["tokens"]:
            raise DatasetError(f"{os.path.join(data_dir, split)}.bin: empty (an evaluation-only dataset? training "
                               f"needs both splits)")
        if not counts.get("bytes"):
            raise DatasetError(f"{os.path.join(data_dir, 'meta.json')}: splits.{split} records no bytes, so bits "
                               f"per byte cannot be computed")
    return meta


class BatchSampler:
    """Random (x, y) windows of block_size tokens from one split. doc_aligned windows start at a <bos>.
    story_only (an instruct dataset, loss_on=story): targets outside the stories are -1, which the loss ignores.
    Positions come from a seeded torch.Generator whose state is saved in checkpoints for exact resume."""

    def __init__(self, data_dir, meta, split, block_size, batch_size, seed, doc_aligned=False, story_only=False):
        self.path = os.path.join(data_dir, f"{split}.bin")
        self.mask_path = os.path.join(data_dir, f"{split}.mask.bin") if story_only else None
        self.story_only = story_only
        if story_only and meta.get("format") != "instruct":
            raise DatasetError(f"{data_dir}: loss_on=story needs a dataset prepared with --format=instruct (this one "
                               f"is {meta.get('format', 'plain')})")
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
        x, y = batch[:, :-1], batch[:, 1:]
        if self.story_only:  # the instruction block is given, not learned: its tokens are no targets
            mask = np.memmap(self.mask_path, dtype=np.uint8, mode="r")
            given = torch.from_numpy(np.stack([mask[i + 1:i + self.block_size + 1] for i in ix.tolist()]) == 0)
            y = y.masked_fill(given, -1)
        return x, y


# ----------------------------------------------------------------------------- training and evaluation

def new_model(cfg, vocab_size):
    """A freshly initialised GPT of the settings' architecture (init_from='scratch')."""
    return GPT(ModelConfig(vocab_size=vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                           n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias, recipe=cfg.recipe,
                           qk_norm=cfg.qk_norm, tie_weights=cfg.tie_weights))


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


OPTIMIZERS = ("adamw", "muon")


def newton_schulz(matrix, coefficients, steps, eps):
    """The approximate orthogonalisation U V^T of matrix = U S V^T that Muon applies (the quintic iteration
    torch.optim.Muon uses), in the matrix's own dtype."""
    a, b, c = coefficients
    wide = matrix.T if matrix.size(0) > matrix.size(1) else matrix
    x = wide / wide.norm().clamp(min=eps)  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if matrix.size(0) > matrix.size(1) else x


class Muon(torch.optim.Muon):
    """torch.optim.Muon, which orthogonalises every update in bf16: right on GPUs and on CPUs whose bf16 products are
    faster (runtime.cpu_bf16_is_faster), but a CPU without native bf16 emulates bf16 matrix products about 9x slower
    than fp32 ones (15.6 against 137 GFLOP/s for 1024 x 1024 on this project's AVX2 machine,
    runtime.measure_matmul_flops), and a Xeon with AVX-512 BF16 but no AMX ran them at about 0.6x fp32. With
    orthogonalize_dtype=torch.float32 the step is the same update
    (momentum, Nesterov, Newton-Schulz, the 'original' shape scaling, decoupled weight decay) in float32; its state
    (one momentum buffer per matrix) and state_dict are torch's."""

    def __init__(self, params, lr, momentum, weight_decay, orthogonalize_dtype=torch.bfloat16):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.orthogonalize_dtype = orthogonalize_dtype

    @torch.no_grad()
    def step(self, closure=None):
        if self.orthogonalize_dtype == torch.bfloat16:
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buffer = state["momentum_buffer"]
                buffer.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                update = newton_schulz(update.to(self.orthogonalize_dtype), group["ns_coefficients"], group["ns_steps"],
                                       group["eps"])
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-lr * math.sqrt(max(1, p.size(0) / p.size(1))))
        return loss


class MuonWithAdamW:
    """Muon on the transformer blocks' weight matrices and AdamW on everything else (the embedding, which the head
    shares, an untied head, positions, norms, biases), as modded-nanogpt and nanochat split them, stepped as one
    optimizer: param_groups, state, step, zero_grad, state_dict and load_state_dict cover both, so the training loop,
    GradScaler, checkpoints and resume treat it like AdamW."""

    def __init__(self, muon, adamw):
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self):
        return self.muon.param_groups + self.adamw.param_groups

    @property
    def state(self):
        """Both optimizers' per-parameter state, to read (a copy: torch's states are defaultdicts, which a lookup of
        the other optimizer's parameter would fill)."""
        return {**self.muon.state, **self.adamw.state}

    def step(self, closure=None):
        loss = self.muon.step(closure)
        self.adamw.step()
        return loss

    def zero_grad(self, set_to_none=True):
        self.muon.zero_grad(set_to_none)
        self.adamw.zero_grad(set_to_none)

    def state_dict(self):
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict):
        if set(state_dict) != {"muon", "adamw"}:
            raise ValueError(f"expected the state of Muon and AdamW, found {', '.join(map(str, state_dict)) or 'none'}")
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])


def orthogonalize_dtype(device):
    """bf16 (torch.optim.Muon's own choice) where bf16 matrix products are faster than fp32 ones, else float32."""
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device == "cpu" and runtime.cpu_bf16_is_faster():
        return torch.bfloat16
    return torch.float32


def make_optimizer(model, cfg, device):
    """cfg.optimizer (absent: AdamW) for the model's trainable parameters. Every group carries lr_scale, its learning
    rate relative to cfg.learning_rate, so that the one schedule sets them all (group["lr"] = lr * lr_scale)."""
    name = getattr(cfg, "optimizer", "adamw")
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer={name!r} is not one of {', '.join(map(repr, OPTIMIZERS))}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # the blocks' 2-D weights are the hidden matrices Muon is for; the embedding and head are matrices too, but
    # their rows are looked up or scored one token at a time, and AdamW suits them better
    hidden = [p for n, p in named if n.startswith("blocks.") and p.dim() == 2] if name == "muon" else []
    taken = {id(p) for p in hidden}
    rest = [p for _, p in named if id(p) not in taken]
    groups = [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
              {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0, "lr_scale": 1.0}]  # norms, biases
    # one fused kernel for the whole update instead of a dozen elementwise passes over every tensor (CPU too)
    fused = device.startswith(("cuda", "cpu"))
    adamw = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=fused)
    if name == "adamw":
        return adamw
    muon = Muon([{"params": hidden, "lr_scale": cfg.muon_lr / cfg.learning_rate}], lr=cfg.muon_lr,
                momentum=cfg.muon_momentum, weight_decay=cfg.weight_decay, orthogonalize_dtype=orthogonalize_dtype(device))
    return MuonWithAdamW(muon, adamw)


@torch.no_grad()
def evaluate(model, samplers, meta, eval_iters, seed, ctx, device):
    """Mean loss of each split over the same eval_iters batches every time (the samplers are re-seeded), with
    bits per byte and validation perplexity: {train_loss, val_loss, val_ppl, train_bpb, val_bpb}."""
    model.eval()
    losses = {}
    for split, sampler in samplers.items():
        sampler.generator.manual_seed(seed + 999)
        split_losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            x, y = (t.to(device) for t in sampler.next_batch())
            with ctx:
                _, loss = model(x, y)
            split_losses[k] = loss.item()
        losses[split] = split_losses.mean().item()
    model.train()
    return {"train_loss": losses["train"], "val_loss": losses["val"], "val_ppl": math.exp(min(losses["val"], 50)),
            "train_bpb": bits_per_byte(losses["train"], meta, "train", samplers["train"].story_only),
            "val_bpb": bits_per_byte(losses["val"], meta, "val", samplers["val"].story_only)}


# ----------------------------------------------------------------------------- the steps of a training loop

def record_evaluation(result, state, cfg, run_log, t_start, say):
    """Say and log evaluate()'s result at state.iter_num, and act on it: a non-finite loss stops the run (a diverged
    model is never checkpointed); else the best validation loss and the early-stopping count are updated, and the
    checkpoint files to write are returned: ckpt_last.pt (at every evaluation with always_save_checkpoint, else on
    improvement), then ckpt_best.pt on improvement; none at iteration 0 or under eval_only."""
    state.last_eval_iter, state.val_loss, state.val_bpb = state.iter_num, result["val_loss"], result["val_bpb"]
    say(f"eval {state.iter_num}: train {result['train_loss']:.4f}, val {result['val_loss']:.4f}, "
        f"val ppl {result['val_ppl']:.2f}, val bpb {result['val_bpb']:.4f}")
    run_log.record({"type": "eval", "iter": state.iter_num, "tokens": state.tokens_seen, **result,
                    "time": time.time() - t_start})
    if not (math.isfinite(result["val_loss"]) and math.isfinite(result["train_loss"])):
        stop_diverged(state, result["val_loss"], cfg.out_dir, say)
        return []
    to_save = []
    improved = result["val_loss"] < state.best_val_loss - cfg.early_stop_min_delta
    if improved:
        state.best_val_loss, state.evals_without_improvement = result["val_loss"], 0
    else:
        state.evals_without_improvement += 1
    if state.iter_num > 0 and not cfg.eval_only:
        to_save = ["ckpt_last.pt"] * (cfg.always_save_checkpoint or improved) + ["ckpt_best.pt"] * improved
    if cfg.early_stop_patience and state.evals_without_improvement >= cfg.early_stop_patience:
        state.stop_reason = (f"early stop: no val improvement > {cfg.early_stop_min_delta} in "
                             f"{state.evals_without_improvement} evals")
    return to_save


def stop_diverged(state, loss, out_dir, say):
    """Stop the run on a non-finite loss, keeping the checkpoints it has (the model is not saved again)."""
    state.stop_reason = "non-finite loss"
    say(f"stopping: loss is {loss} at iteration {state.iter_num}; the last good checkpoint in {out_dir} is kept "
        f"(lower learning_rate, or use float32)")


def elapsed_seconds(t_start, ddp=False, device="cpu"):
    """Seconds since t_start. ddp: the slowest rank's (every rank must call it), so that all ranks pace the schedule
    and stop on one clock, at the same iteration."""
    elapsed = time.time() - t_start
    if ddp:
        clock = torch.tensor([elapsed], device=device)
        torch.distributed.all_reduce(clock, op=torch.distributed.ReduceOp.MAX)
        elapsed = clock.item()
    return elapsed


def stop_reason(state, cfg, signal_name, out_of_time=False):
    """Why the run stops at this iteration, or None: the reason decided already (a non-finite loss, early stopping),
    else, in this order, a stop signal (SIGINT / SIGTERM), eval_only, max_iters, the time budget (max_seconds)."""
    if state.stop_reason is not None:
        return state.stop_reason
    if signal_name:
        return signal_name
    if cfg.eval_only:
        return "eval_only"
    if state.iter_num >= cfg.max_iters:
        return "max_iters"
    if out_of_time:
        return f"max_seconds ({cfg.max_seconds:g} s)"
    return None


def checkpoints_to_write(names, state, cfg):
    """The checkpoint files to write before the loop goes on or stops: names (what the evaluation asked for), with
    ckpt_last.pt first when a signal stops the run, so that it can resume from where it stopped (unless nothing was
    trained yet, or under eval_only)."""
    if (state.stop_reason in SIGNAL_STOPS and state.iter_num > 0 and not cfg.eval_only
            and "ckpt_last.pt" not in names):
        return ["ckpt_last.pt", *names]
    return names


def set_learning_rate(optimizer, lr):
    """Set each parameter group's learning rate: lr times the group's lr_scale (Muon's matrices run at
    muon_lr / learning_rate times the schedule)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def optimizer_step(model, optimizer, scaler, grad_clip):
    """One optimizer step on the accumulated gradients: clipped to a global norm of grad_clip first (0: not
    clipped; unscaled first under float16), stepped through the GradScaler, then zeroed."""
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def tokens_per_second(tokens_seen, tokens_at_last, t_last):
    """The rate since the last log record (taken at t_last, with tokens_at_last tokens seen)."""
    return (tokens_seen - tokens_at_last) / max(time.time() - t_last, 1e-9)


# ----------------------------------------------------------------------------- run state and checkpoints

@dataclass
class TrainState:
    """What changes as a run trains, besides weights, optimizer and RNG states. Its fields are saved whole into
    every checkpoint (as top-level keys, which summary tools read) and restored whole on resume."""
    iter_num: int = 0                  # optimizer steps taken
    tokens_seen: int = 0
    best_val_loss: float = math.inf
    evals_without_improvement: int = 0
    last_eval_iter: int = -1           # a resumed run does not evaluate this iteration again
    val_loss: float | None = None      # of the latest evaluation
    val_bpb: float | None = None
    stop_reason: str | None = None     # set where the loop decides to stop

    @classmethod
    def from_checkpoint(cls, ckpt):
        """The state saved in ckpt (a field an older checkpoint lacks takes its default)."""
        return cls(**{f.name: ckpt[f.name] for f in fields(cls) if f.name in ckpt})


def save_checkpoint(out_dir, names, *, model, optimizer, scaler, state, config, meta, tokenizer, data_generator,
                    ddp=False, extra=None):
    """Write one checkpoint to each named file in out_dir, in the order given. Under DDP every rank calls it (each
    contributes its data generator's state) and rank 0 writes. extra: more top-level entries (plain values), such
    as the fingerprint of a distillation teacher. state may be any dataclass (TrainState or a script's own)."""
    data_rng = [data_generator.get_state()]
    if ddp:
        data_rng = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(data_rng, data_generator.get_state())
        if torch.distributed.get_rank() != 0:
            return
    contents = {**asdict(state), "model_args": model.model_args(), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "config": config,
                "dataset": config["dataset"], "meta": meta, "tokenizer": tokenizer, "rng": runtime.rng_state(),
                "data_rng": data_rng, **(extra or {})}
    for name in names:
        checkpoint.save_atomic(contents, os.path.join(out_dir, name))


def resume_state(ckpt, optimizer, scaler, data_generator, rank=0, world_size=1, state_class=TrainState):
    """Restore the optimizer, scaler, RNG and this rank's data generator from ckpt; returns its state (a
    state_class, TrainState by default), with no stop reason (the resumed run decides afresh when to stop)."""
    path = ckpt["path"]
    missing = [key for key in ("optimizer", "scaler", "rng", "data_rng", "iter_num") if key not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path}: no {', '.join(missing)}, so it cannot be resumed (it can start a "
                              f"new run: --init_from={path})")
    if len(ckpt["data_rng"]) != world_size:
        raise CheckpointError(f"checkpoint {path}: saved with {len(ckpt['data_rng'])} ranks, resumed with "
                              f"{world_size}; resume with the same number of ranks")
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {path}: its optimizer state does not fit the model "
                              f"({one_line(e)})") from None
    for group in optimizer.param_groups:
        for p in group["params"]:
            for name, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.dim() and value.shape != p.shape:
                    raise CheckpointError(f"checkpoint {path}: optimizer {name} of shape {tuple(value.shape)} does "
                                          f"not fit a parameter of shape {tuple(p.shape)}")
    runtime.set_rng_state(ckpt["rng"])
    data_generator.set_state(ckpt["data_rng"][rank])
    state = state_class(**{f.name: ckpt[f.name] for f in fields(state_class) if f.name in ckpt})
    state.stop_reason = None
    return state


# ----------------------------------------------------------------------------- output

TEMP_FILES = ("ckpt_*.pt.tmp.*", "log.jsonl.tmp.*", "summary.json.tmp.*", "loss.png.tmp.*")


def prepare_out_dir(out_dir, say=print):
    """Create out_dir, remove the temp files a killed run left in it (one checkpoint-size file per kill), and any
    summary.json: a run in progress has none (the sweep script reads it as 'finished')."""
    os.makedirs(out_dir, exist_ok=True)
    removed = sum(remove_stale_temp_files(out_dir, pattern) for pattern in TEMP_FILES)
    if removed:
        say(f"removed {removed} temporary file(s) left in {out_dir} by a killed run")
    summary = os.path.join(out_dir, "summary.json")
    if os.path.exists(summary):
        os.remove(summary)


def log_records_until(path, last_iter):
    """The records of log.jsonl up to and including iteration last_iter, stopping at a torn line."""
    records = []
    if not os.path.exists(path):
        return records
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break  # the torn last line of a killed run
            if isinstance(record, dict) and record.get("iter", 0) <= last_iter:
                records.append(record)
    return records


class RunLog:
    """log.jsonl in out_dir (one JSON record a line, flushed at once) and wandb when it is enabled. A run from
    scratch starts a new log; a resumed one keeps the records up to the iteration it resumes from, dropping what a
    killed run logged after its last checkpoint, so each iteration appears once. enabled=False (ranks other
    than 0, eval_only) writes nothing."""

    def __init__(self, out_dir, resume_iter=None, config=None, enabled=True, say=print):
        self.path = os.path.join(out_dir, "log.jsonl")
        self.file = self.wandb = None
        if not enabled:
            return
        write_jsonl_atomic(self.path, [] if resume_iter is None else log_records_until(self.path, resume_iter))
        self.file = open(self.path, "a", encoding="utf-8")
        self.wandb = start_wandb(config, out_dir, say) if config else None

    def record(self, entry):
        if self.file is None:
            return
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in entry.items() if k != "type"}, step=entry["iter"])

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def start_wandb(config, out_dir, say):
    if config.get("wandb_mode", "disabled") == "disabled":
        return None
    try:
        import wandb
        return wandb.init(project=config["wandb_project"], name=config["wandb_run_name"] or None, config=config,
                          mode=config["wandb_mode"], dir=out_dir)
    except Exception as e:  # training never depends on wandb
        say(f"warning: wandb disabled ({one_line(e)})")
        return None


def open_run_log(cfg, settings, state, enabled, say):
    """The run's RunLog (log.jsonl, wandb) in out_dir, prepared first (prepare_out_dir); a resumed run keeps the
    records up to state.iter_num. enabled=False (ranks other than 0, eval_only) writes nothing."""
    if enabled:
        prepare_out_dir(cfg.out_dir, say)
    return RunLog(cfg.out_dir, state.iter_num if cfg.init_from == "resume" else None, settings, enabled=enabled,
                  say=say)


def write_summary(cfg, meta, model, state, seconds, command=""):
    """summary.json (the run's size, data, final and best validation loss and bits per byte, time, why it stopped)
    and loss.png in cfg.out_dir; returns the summary."""
    plot_loss_curves([(cfg.dataset, os.path.join(cfg.out_dir, "log.jsonl"))], os.path.join(cfg.out_dir, "loss.png"),
                     title=f"{cfg.dataset}: {model.num_params() / 1e6:.2f}M params")
    best = state.best_val_loss if math.isfinite(state.best_val_loss) else None
    summary = {"dataset": cfg.dataset, "out_dir": cfg.out_dir, "iters": state.iter_num, "tokens": state.tokens_seen,
               "params": model.num_params(), "params_non_embedding": model.num_params(non_embedding=True),
               "n_layer": model.config.n_layer, "n_embd": model.config.n_embd, "n_head": model.config.n_head,
               "recipe": model.config.recipe, "vocab_size": model.config.vocab_size,
               "tokenizer": meta.get("tokenizer_name", ""), "learning_rate": cfg.learning_rate,
               "warmup_iters": cfg.warmup_iters, "final_val_loss": state.val_loss, "final_val_bpb": state.val_bpb,
               "best_val_loss": best, "best_val_bpb": None if best is None else
               bits_per_byte(best, meta, "val", getattr(cfg, "loss_on", "all") == "story"),
               "seconds": seconds, "stop_reason": state.stop_reason, "command": command}
    write_json_atomic(os.path.join(cfg.out_dir, "summary.json"), summary)
    return summary


def resume_command(script, out_dir, world_size=1):
    launcher = "python" if world_size == 1 else f"torchrun --standalone --nproc_per_node={world_size}"
    return f"{launcher} {script} --init_from=resume --out_dir={shlex.quote(out_dir)}"


def report_signal_stop(state, cfg, script, world_size=1):
    """The line on stderr of a run that a signal stopped: at which iteration, what it saved, and the command that
    resumes it (script: the script's __file__)."""
    saved_note = (f"saved {os.path.join(cfg.out_dir, 'ckpt_last.pt')}" if state.iter_num > 0 and not cfg.eval_only
                  else "nothing trained, nothing saved")
    print(f"{state.stop_reason} at iteration {state.iter_num}: {saved_note}; resume with: "
          f"{resume_command(os.path.relpath(script), cfg.out_dir, world_size)}", file=sys.stderr)


def sha256_of_files(paths, prefix=b""):
    """SHA-256 of prefix, then each file's name and contents, in the order given: what a resumed run checks a
    model it depends on (a distillation teacher, a KL reference) by."""
    h = hashlib.sha256(prefix)
    for path in paths:
        h.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- stopping on a signal

class StopSignals:
    """Inside `with StopSignals() as signals:`, SIGINT (Ctrl-C) and SIGTERM (a preempted machine) do not kill the
    process: the loop asks signals.requested() once per iteration, and stops and saves when it says so. The same
    signal a second time stops at once, without saving (exit status 128 + its number), unless repeat_stops=False:
    under torchrun a Ctrl-C reaches every rank twice (from the terminal, then from torchrun), and torchrun itself
    kills ranks that take too long. announce=False (ranks other than 0) prints nothing."""
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, repeat_stops=True, announce=True):
        self.repeat_stops, self.announce = repeat_stops, announce
        self.received = None
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # Python delivers signals to the main thread only
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.received == signum and self.repeat_stops:
            raise SystemExit(128 + signum)
        if self.received is None:
            self.received = signum
            again = f" ({name} again stops at once, without saving)" if self.repeat_stops else ""
            if self.announce:  # os.write, not print: the handler may interrupt a write to stderr (the progress bar)
                os.write(2, f"\n{name}: stopping after this iteration to save ckpt_last.pt{again}\n".encode())

    def requested(self, ddp=False, device="cpu"):
        """The name of the signal that asks to stop ('SIGINT', 'SIGTERM') or None. Under DDP every rank learns
        whether any rank got one, so all stop at the same iteration."""
        signum = self.received or 0
        if ddp:
            flag = torch.tensor([signum], device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            signum = int(flag.item())
        return signal.Signals(signum).name if signum else None


# ----------------------------------------------------------------------------- the scripts' main()

SIGNAL_STOPS = ("SIGINT", "SIGTERM")
EXIT_STATUS = {"non-finite loss": 1, "SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}


def run_training_script(run, argv=None):
    """main() of train.py, distill.py and finetune_reward.py: run(argv, signals) with SIGINT / SIGTERM turned into a
    saved stop (under torchrun every rank stops at the same iteration), bad input as one error line, the process
    group that run joined (runtime.start_ranks) left once it returns, and the exit status of how the run stopped."""
    argv = sys.argv[1:] if argv is None else argv
    rank, _, world_size = runtime.world_info()
    try:
        with StopSignals(repeat_stops=world_size == 1, announce=rank == 0) as signals:
            reason = run(argv, signals)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    except (InputError, tk.TokenizerError) as e:
        sys.exit(f"error: {e}")
    if EXIT_STATUS.get(reason):
        sys.exit(EXIT_STATUS[reason])
