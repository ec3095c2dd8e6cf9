"""
Train a small story language model on a prepared dataset (see data/prepare.py).

    python training-inference/train.py configs/micro.py --dataset=demo-hindi --max_iters=500
    python training-inference/train.py --init_from=resume --out_dir=out/run --max_iters=4000
    torchrun --standalone --nproc_per_node=4 training-inference/train.py configs/gpt-512x6.py

Runs on CPU, one GPU, or many through torchrun (DDP). Every eval_interval it logs train/val loss, perplexity and
bits-per-byte, and writes ckpt_last.pt (then ckpt_best.pt when validation improves) atomically into out_dir.
init_from='resume' continues exactly where ckpt_last.pt stopped, with the run's own settings: same batches, same
dropout, same result. Only max_iters, evaluation, logging, early stopping and device settings may change on resume.
Ctrl-C (SIGINT) or SIGTERM stops after the current iteration, saves ckpt_last.pt and says how to resume.
"""
import json
import math
import os
import shlex
import time
from contextlib import nullcontext
from types import SimpleNamespace

# Large CPU tensors on 2 MB pages: PyTorch's allocator reads this once, at its first allocation, so it is set before
# torch is imported. A fresh 134 MB tensor (the fp32 logits of a 16 x 256 x 8192 batch) then cost 9 ms instead of
# 35 ms of page faults in a one-off timing on a 2-core AMD EPYC (README, Performance: bench_train's runs with it).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch
from tqdm import tqdm

from regional_tinystories import checkpoint, runtime
from regional_tinystories import tokenizer as tk
from regional_tinystories.config import parse_settings
from regional_tinystories.training import (
    SIGNAL_STOPS,
    BatchSampler,
    TrainState,
    accumulation_steps,
    check_settings,
    checkpoints_to_write,
    elapsed_seconds,
    evaluate,
    learning_rate_at,
    make_optimizer,
    new_model,
    open_dataset,
    open_run_log,
    optimizer_step,
    record_evaluation,
    report_signal_stop,
    resume_state,
    run_training_script,
    save_checkpoint,
    set_learning_rate,
    starting_point,
    stop_diverged,
    stop_reason,
    tokens_per_second,
    write_summary,
)

DEFAULTS = dict(
    # I/O
    out_dir="out/run",
    dataset="demo-hindi",          # folder under data_root written by prepare.py
    data_root="data",
    init_from="scratch",           # 'scratch', 'resume' (out_dir/ckpt_last.pt), a .pt path or run folder, hf:OWNER/REPO/FILE.pt,
                                   # gpt2 / gpt2-medium / gpt2-large / gpt2-xl, or a transformers model folder
    tokenizer="",                  # with init_from a nanoGPT .pt (which carries none): its tokenizer, e.g. tiktoken:gpt2
    eval_interval=200,
    eval_iters=20,                 # batches per split for each evaluation
    log_interval=10,
    eval_only=False,               # evaluate once and print it; writes nothing
    always_save_checkpoint=True,   # write ckpt_last.pt at every evaluation (ckpt_best.pt only on improvement)
    wandb_mode="disabled",         # 'online' (needs WANDB_API_KEY in the environment), 'offline', 'disabled'
    wandb_project="regional-tinystories",
    wandb_run_name="",
    # data
    batch_size=32,
    block_size=256,
    gradient_accumulation_steps=1,  # total across ranks; each of N ranks does 1/N of it
    doc_aligned=False,             # windows start at <bos> instead of anywhere
    loss_on="all",                 # 'story': on an instruct dataset, learn the stories only, not the instruction blocks
    # model
    recipe="modern",               # 'classic' (GPT-2) or 'modern' (RoPE, RMSNorm, SwiGLU)
    n_layer=4,
    n_head=4,
    n_embd=128,
    dropout=0.0,
    bias=False,
    qk_norm=False,
    tie_weights=True,
    # optimizer: 'muon' (Muon on the blocks' weight matrices, AdamW at learning_rate on the embedding/head, norms
    # and biases: lower val bpb at a fixed CPU time, see scripts/bench_quality.py), or 'adamw' (AdamW on everything,
    # weight decay on 2-D weights only)
    optimizer="muon",
    learning_rate=1e-3,            # AdamW's peak learning rate (with muon, the embedding's: it suits a higher one)
    muon_lr=0.02,                  # Muon's peak learning rate; the schedule scales it as it scales learning_rate
    muon_momentum=0.95,
    max_iters=2000,
    max_seconds=0.0,               # > 0: a time budget: evaluate, save and stop once training has run this long; the
                                   # LR schedule is then paced by time too (runs so budgeted are not bit-reproducible)
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
CHOICES = dict(recipe=("classic", "modern"), optimizer=("adamw", "muon"), loss_on=("all", "story"),
               lr_schedule=("cosine", "wsd", "constant"), dtype=("auto", "float32", "bfloat16", "float16"),
               wandb_mode=("online", "offline", "disabled"))
TYPES = dict(lr_decay_iters=int)  # the type of each setting whose default is None


def train(argv, signals):
    """One training run; returns why it stopped. signals (a StopSignals) says when SIGINT / SIGTERM asks to stop."""
    rank, local_rank, world_size = runtime.world_info()
    master = rank == 0
    say = tqdm.write if master else (lambda message: None)  # only rank 0 prints and writes files

    # ------------------------------------------------------------------ settings
    # defaults < config files < --key=value; a resumed run takes its own saved settings instead
    given = parse_settings(DEFAULTS, argv, CHOICES, __doc__, TYPES)
    settings, ckpt, changes = starting_point(given, DEFAULTS, CHOICES, TYPES)  # ckpt: None from scratch
    for key, old, new in changes:  # what a resumed run changes
        note = ""
        if key == "max_iters" and settings["lr_decay_iters"] is None and settings["lr_schedule"] != "constant":
            note = f" (lr_decay_iters is unset, so the learning-rate schedule now ends at {new})"
        say(f"resume: {key} {old!r} -> {new!r}{note}")
    check_settings(settings)
    cfg = SimpleNamespace(**settings)
    say("config: " + json.dumps(settings))

    # ------------------------------------------------------------------ system
    ddp = world_size > 1
    device = runtime.start_ranks(runtime.pick_device(cfg.device), local_rank, world_size)
    accum_steps = accumulation_steps(cfg, world_size)
    dtype = runtime.pick_dtype(cfg.dtype, device)
    ctx = runtime.autocast(device, dtype)
    runtime.seed_everything(cfg.seed)

    # ------------------------------------------------------------------ data
    data_dir = os.path.join(cfg.data_root, cfg.dataset)
    meta = open_dataset(data_dir)  # meta.json, sizes, framing ends and token ids checked
    tokenizer = tk.load_dataset_tokenizer(meta, data_dir)
    story_only = cfg.loss_on == "story"
    train_batches = BatchSampler(data_dir, meta, "train", cfg.block_size, cfg.batch_size, cfg.seed + 1000 * rank,
                                 cfg.doc_aligned, story_only)
    eval_batches = {split: BatchSampler(data_dir, meta, split, cfg.block_size, cfg.batch_size, 0, cfg.doc_aligned,
                                        story_only) for split in ("train", "val")}
    tokens_per_iter = cfg.batch_size * cfg.block_size * accum_steps * world_size

    # ------------------------------------------------------------------ model
    if ckpt is None:
        model = new_model(cfg, meta["vocab_size"])
    else:
        model = checkpoint.build_model(ckpt, dropout=cfg.dropout)
        recorded = ckpt.get("tokenizer", {}).get("sha256")
        same_tokenizer = recorded is not None and recorded == tk.files_sha256(tokenizer)
        # a model may have more token rows than its tokenizer has ids (nanoGPT pads GPT-2's 50257 to 50304)
        if model.config.vocab_size < meta["vocab_size"] or (model.config.vocab_size != meta["vocab_size"]
                                                           and not same_tokenizer):
            raise checkpoint.CheckpointError(
                f"checkpoint {ckpt['path']}: vocabulary {model.config.vocab_size} does not match dataset "
                f"{cfg.dataset} ({meta['vocab_size']}); prepare the data with the checkpoint's tokenizer")
        if recorded is not None and not same_tokenizer:
            raise checkpoint.CheckpointError(f"checkpoint {ckpt['path']}: its tokenizer is not the one of dataset "
                                             f"{data_dir}; prepare the data with the checkpoint's tokenizer")
        say(f"initialising from {ckpt['path']} (iteration {ckpt.get('iter_num', 0)})")
    model.to(device)
    say(f"model: {model.config.recipe}, {model.config.n_layer} layers x {model.config.n_embd} hidden, "
        f"{model.config.n_head} heads, vocab {model.config.vocab_size}: {model.num_params() / 1e6:.2f}M parameters "
        f"({model.num_params(non_embedding=True) / 1e6:.2f}M without embeddings)")
    say(f"device {device}, dtype {dtype}, {world_size} rank(s), {tokens_per_iter:,} tokens per iteration")

    # ------------------------------------------------------------------ optimizer and run state
    optimizer = make_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(enabled=(dtype == "float16"))
    state = TrainState()
    if cfg.init_from == "resume":  # optimizer, scaler, RNG, data order and counters exactly as saved
        state = resume_state(ckpt, optimizer, scaler, train_batches.generator, rank, world_size)
    ckpt = None  # free its memory

    raw_model = model  # what is saved: without the torch.compile and DDP wrappers
    model = runtime.wrap_for_training(model, cfg.compile, world_size, local_rank, device)

    # ------------------------------------------------------------------ output folder and log
    writes = master and not cfg.eval_only
    run_log = open_run_log(cfg, settings, state, enabled=writes, say=say)
    checkpoint_parts = dict(model=raw_model, optimizer=optimizer, scaler=scaler, state=state, config=settings,
                            meta=meta, tokenizer=tk.export(tokenizer), data_generator=train_batches.generator, ddp=ddp)
    flops_per_token = raw_model.flops_per_token()
    peak = runtime.peak_flops(device, dtype) if master else None

    # ------------------------------------------------------------------ the training loop
    bar = tqdm(total=cfg.max_iters, initial=state.iter_num, desc="training", unit="it", disable=not master or None)
    t_start = t_last = time.time()
    tokens_at_last = state.tokens_seen
    while True:
        to_save = []  # checkpoint files to write at this iteration, ckpt_last.pt first

        # evaluate every eval_interval iterations and at the end, once per iteration (a resumed run has
        # evaluated the iteration it starts from already); under a time budget every rank uses the rank-slowest
        # clock: same schedule, same stopping iteration
        elapsed = elapsed_seconds(t_start, ddp and cfg.max_seconds > 0, device)
        out_of_time = cfg.max_seconds > 0 and elapsed >= cfg.max_seconds
        due = state.iter_num % cfg.eval_interval == 0 or state.iter_num >= cfg.max_iters or out_of_time
        if cfg.eval_only or (due and state.last_eval_iter != state.iter_num):
            result = evaluate(model, eval_batches, meta, cfg.eval_iters, cfg.seed, ctx, device)
            to_save = record_evaluation(result, state, cfg, run_log, t_start, say)  # a non-finite loss: stop, no save

        # stop? on SIGINT / SIGTERM (saving ckpt_last.pt), eval_only, max_iters, max_seconds
        state.stop_reason = stop_reason(state, cfg, signals.requested(ddp, device), out_of_time)
        to_save = checkpoints_to_write(to_save, state, cfg)
        if to_save:
            save_checkpoint(cfg.out_dir, to_save, **checkpoint_parts)
        if state.stop_reason is not None:
            break

        # one optimizer step over gradient_accumulation_steps micro-batches
        # under a time budget the schedule is paced by whichever runs out first, iterations or seconds, so that the
        # learning rate has decayed when the time is up, on a fast machine or a slow one
        schedule_iter = state.iter_num
        if cfg.max_seconds > 0:
            schedule_iter = max(schedule_iter, int(elapsed / cfg.max_seconds * (cfg.lr_decay_iters or cfg.max_iters)))
        lr = learning_rate_at(schedule_iter, cfg)
        set_learning_rate(optimizer, lr)
        loss_sum = 0.0
        for micro in range(accum_steps):
            x, y = (t.to(device, non_blocking=True) for t in train_batches.next_batch())
            sync = nullcontext() if not ddp or micro == accum_steps - 1 else model.no_sync()
            with sync:
                with ctx:
                    _, loss = model(x, y, return_logits=False)
                loss = loss / accum_steps
                scaler.scale(loss).backward()
            loss_sum += loss.item()
        if not math.isfinite(loss_sum):  # stop before the step, with the model as it was
            stop_diverged(state, loss_sum, cfg.out_dir, say)
            break
        optimizer_step(model, optimizer, scaler, cfg.grad_clip)
        state.iter_num += 1
        state.tokens_seen += tokens_per_iter
        bar.update(1)

        if state.iter_num % cfg.log_interval == 0 or state.iter_num == cfg.max_iters:
            tok_per_s = tokens_per_second(state.tokens_seen, tokens_at_last, t_last)
            mfu = flops_per_token * tok_per_s / world_size / peak if peak else 0.0
            run_log.record({"type": "train", "iter": state.iter_num, "tokens": state.tokens_seen,
                            "loss": loss_sum, "lr": lr, "tokens_per_s": tok_per_s, "mfu": mfu})
            bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{tok_per_s:,.0f}", mfu=f"{100 * mfu:.1f}%")
            t_last, tokens_at_last = time.time(), state.tokens_seen
    bar.close()

    # ------------------------------------------------------------------ the end
    elapsed = time.time() - t_start
    run_log.close()
    if state.stop_reason in SIGNAL_STOPS and master:
        report_signal_stop(state, cfg, __file__, world_size)
    elif writes:
        command = shlex.join(["python", "training-inference/train.py", *argv])
        summary = write_summary(cfg, meta, raw_model, state, elapsed, command=command)
        val = "no eval"
        if state.val_loss is not None:
            val = f"val loss {state.val_loss:.4f} (bpb {state.val_bpb:.4f})"
            if summary["best_val_loss"] is not None and summary["best_val_loss"] < state.val_loss:
                val += f", best {summary['best_val_loss']:.4f} (bpb {summary['best_val_bpb']:.4f}) in ckpt_best.pt"
        say(f"done ({state.stop_reason}): {state.iter_num} iters, {state.tokens_seen:,} tokens in {elapsed:.0f}s, "
            f"{val}, {summary['params'] / 1e6:.2f}M params -> {cfg.out_dir}/ (ckpt_best.pt, ckpt_last.pt, log.jsonl, "
            f"loss.png)")
    return state.stop_reason  # main() then leaves the process group under torchrun


def main(argv=None):
    run_training_script(train, argv)


if __name__ == "__main__":
    main()
