"""
Fine-tune a trained story model to raise a reward, with a KL penalty to the starting model (seed 004,
TinyStories-Reward), in the shape of train.py.

    python training-inference/finetune_reward.py configs/reward-demo.py --init_from=out/hindi-micro
    python training-inference/finetune_reward.py --init_from=out/hindi-micro --reward=target_words --target_words=बिल्ली
    python training-inference/finetune_reward.py --init_from=resume --out_dir=out/reward --max_iters=400
    torchrun --standalone --nproc_per_node=4 training-inference/finetune_reward.py configs/reward-demo.py --init_from=...

Every iteration samples batch_size stories from random training prompts (all rows at once, with the KV cache),
scores them with the reward (plug-ins in regional_tinystories/rewards.py, chosen by name), and takes a REINFORCE
step with a baseline (the batch's mean reward, or a running mean) and a KL penalty to the frozen starting model:

    loss = mean over samples of  sum over its tokens of  [ -(r - b) * log p(token) + kl_coef * KL(p || p_ref) ]

where p and p_ref are the policy's and the reference's next-token distributions at that position (the KL is exact
over the vocabulary, not a one-sample estimate). Log-probabilities come from one teacher-forced forward pass over
prompt + sample with gradients. kl_coef=0 drops the anchor (and the model collapses onto whatever the reward
likes, e.g. repeating the target word). ppo_epochs > 1 reuses each batch for more steps with PPO's clipped ratio.

Every eval_interval it samples the held-out prompts with a fixed seed and logs reward, KL per token, entropy,
distinct-2, length (and val loss / bits per byte on the model's dataset when its folder is there), with example
stories. Checkpoints are train.py's (ckpt_last.pt every eval, ckpt_best.pt at the highest eval reward), loadable by
sample.py and serve.py; init_from='resume' continues exactly; SIGINT / SIGTERM save and stop.
"""
import json
import math
import os
import time
from dataclasses import dataclass
from types import SimpleNamespace

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # large CPU tensors on 2 MB pages, as in train.py

import torch
from torch.nn import functional as F
from tqdm import tqdm

from regional_tinystories import checkpoint, rewards, runtime
from regional_tinystories import tokenizer as tk
from regional_tinystories.config import ConfigError, parse_settings
from regional_tinystories.errors import InputError
from regional_tinystories.files import read_input_records, write_json_atomic
from regional_tinystories.metrics import distinct_n
from regional_tinystories.model import KVCache
from regional_tinystories.sampling import SamplingConfig, sample_next
from regional_tinystories.training import (
    RESUME_MAY_CHANGE,
    SIGNAL_STOPS,
    BatchSampler,
    check_settings,
    checkpoints_to_write,
    evaluate,
    learning_rate_at,
    log_records_until,
    make_optimizer,
    open_dataset,
    open_run_log,
    optimizer_step,
    report_signal_stop,
    resume_settings,
    resume_state,
    run_training_script,
    save_checkpoint,
    set_learning_rate,
    sha256_of_files,
    stop_diverged,
    stop_reason,
)

DEFAULTS = dict(
    # I/O
    out_dir="out/reward",
    init_from="",                  # the model to fine-tune: run folder (its ckpt_best.pt), .pt, hf:..., or 'resume'
    tokenizer="",                  # with init_from a nanoGPT .pt (which carries none): its tokenizer, e.g. tiktoken:gpt2
    reference="",                  # the frozen model of the KL term; '' = init_from
    dataset="",                    # for val loss / bpb; '' = the model's own dataset, if its folder is in data_root
    data_root="data",
    eval_interval=20,
    eval_iters=10,                 # val-loss batches per evaluation
    eval_prompts=16,               # the first this many prompts are held out, sampled at every evaluation
    examples=2,                    # stories shown (and logged) per evaluation
    log_interval=1,
    eval_only=False,
    always_save_checkpoint=True,
    wandb_mode="disabled",
    wandb_project="regional-tinystories",
    wandb_run_name="",
    # prompts
    prompts="data/demo/hindi.jsonl.gz",  # .txt (one prompt a line) or JSONL / JSON records (.gz too)
    prompt_field="story",          # the record field the prompt comes from
    prompt_words=8,                # the prompt is the field's first this many words; 0 = all of it
    language="hindi",              # for inflection-aware word matching (a record's own 'language' wins)
    # reward (see regional_tinystories/rewards.py)
    reward="coverage",             # names joined by '+': target_words, target_presence, coverage, length_band, embedding
    target_words="",               # comma-separated, for target_words / target_presence
    length_min=40,                 # length_band, in words
    length_max=120,
    embedding_model="",            # a local sentence-embedding model folder, for reward=embedding
    topic="",                      # the text the embedding reward compares each story with
    # policy gradient
    batch_size=16,                 # samples per iteration (per rank)
    max_new_tokens=64,
    temperature=1.0,               # of the policy: sampling and log-probabilities both use it
    kl_coef=0.1,                   # beta of the KL penalty to the reference; 0 = no anchor
    baseline="batch",              # 'batch': the batch's mean reward; 'running': a running mean over batches
    baseline_decay=0.9,            # 'running': weight of the old mean
    ppo_epochs=1,                  # optimizer steps per batch of samples; > 1 uses PPO's clipped ratio
    clip_range=0.2,
    # optimizer
    learning_rate=1e-4,
    max_iters=200,
    weight_decay=0.0,
    beta1=0.9,
    beta2=0.95,
    grad_clip=1.0,
    lr_schedule="constant",
    warmup_iters=0,
    lr_decay_iters=None,
    min_lr=1e-5,
    wsd_decay_fraction=0.2,
    # system
    device="auto",
    dtype="auto",
    compile=False,
    seed=1337,
)
CHOICES = dict(lr_schedule=("cosine", "wsd", "constant"), dtype=("auto", "float32", "bfloat16", "float16"),
               baseline=("batch", "running"), wandb_mode=("online", "offline", "disabled"))
TYPES = dict(lr_decay_iters=int)
MAY_CHANGE = RESUME_MAY_CHANGE + ("examples",)


@dataclass
class RewardState:
    """What changes as the run trains, besides weights, optimizer and RNG states; saved whole in every checkpoint."""
    iter_num: int = 0                  # batches of samples trained on
    samples_seen: int = 0
    tokens_seen: int = 0               # sampled tokens trained on
    baseline: float | None = None      # the running mean reward (baseline='running')
    best_reward: float = -math.inf     # the highest eval reward so far (ckpt_best.pt)
    last_eval_iter: int = -1
    reward: float | None = None        # of the latest evaluation
    kl: float | None = None
    val_loss: float | None = None
    val_bpb: float | None = None
    stop_reason: str | None = None


def check_reward_settings(settings):
    problems = [f"{key}={settings[key]} must be at least {least}" for key, least in
                (("eval_prompts", 1), ("max_new_tokens", 1), ("ppo_epochs", 1), ("prompt_words", 0),
                 ("examples", 0), ("length_min", 1)) if settings[key] < least]
    problems += [f"{key}={settings[key]} must be positive" for key in ("temperature",) if not settings[key] > 0]
    problems += [f"{key}={settings[key]} must not be negative" for key in ("kl_coef", "clip_range")
                 if not settings[key] >= 0]
    if not 0 <= settings["baseline_decay"] < 1:
        problems.append(f"baseline_decay={settings['baseline_decay']} must be in [0, 1)")
    if settings["length_max"] < settings["length_min"]:
        problems.append(f"length_max={settings['length_max']} is below length_min={settings['length_min']}")
    if problems:
        raise ConfigError(problems[0])
    names = rewards.parse_names(settings["reward"])
    if {"target_words", "target_presence"} & set(names):
        rewards.target_list(SimpleNamespace(**settings))
    if "embedding" in names and not (settings["embedding_model"] and settings["topic"]):
        raise ConfigError("reward=embedding needs embedding_model (a local sentence-embedding model folder) and topic")


def fingerprint(source):
    """SHA-256 of a checkpoint file (and its path), or of the files of a model folder (a name such as gpt2: of the
    name)."""
    if os.path.isdir(source):
        return sha256_of_files(sorted(os.path.join(source, f) for f in os.listdir(source)))
    return sha256_of_files([source] if os.path.isfile(source) else [], prefix=source.encode())


def load_prompts(path, field, prompt_words):
    """[(prompt text, record)]: a .txt file's non-empty lines, or each record's field (its first prompt_words
    words when prompt_words > 0)."""
    if path.endswith(".txt"):
        if not os.path.isfile(path):
            raise InputError(f"prompts {path}: no such file")
        with open(path, encoding="utf-8") as f:
            records = [{"prompt": line.strip()} for line in f if line.strip()]
        field = "prompt"
    else:
        records = [record for _, record in read_input_records(path)]
    prompts = []
    for i, record in enumerate(records):
        text = record.get(field)
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"prompts {path}: record {i + 1} has no text in field {field!r}")
        prompts.append((" ".join(text.split()[:prompt_words]) if prompt_words else text.strip(), record))
    return prompts


# ----------------------------------------------------------------------------- batched sampling and log-probs

def left_pad(rows, pad_id, device):
    """Token rows of unequal length -> (ids (B, T), real (B, T): False where the left padding is)."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    real = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, row in enumerate(rows):
        ids[b, width - len(row):] = torch.tensor(row)
        real[b, width - len(row):] = True
    return ids.to(device), real.to(device)


def positions_of(real):
    """Each row counts positions from its first real token (padding sits at 0)."""
    return (real.long().cumsum(1) - 1).clamp(min=0)


def attention_mask(real):
    """(B, 1, T, T) True = may attend: causal, never to padding. A padding position attends to itself, so that no
    row of the attention is empty (an empty row is NaN, and NaN spreads through later layers)."""
    T = real.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=real.device).tril()
    return ((causal & real[:, None, :]) | torch.eye(T, dtype=torch.bool, device=real.device))[:, None]


@torch.no_grad()
def sample_batch(model, prompt_rows, sampling, eos_id, ctx, generator=None):
    """Continue every prompt (lists of ids) by up to max_new_tokens, all rows at once with the KV cache.
    Returns (prompt ids (B, P), real (B, P), new tokens (B, N), keep (B, N)): keep marks each row's tokens up to
    and including its eos; the positions after it are filled with eos and take no part in the loss."""
    ids, real = left_pad(prompt_rows, eos_id, real_device(model))
    B, P = ids.shape
    cache = KVCache(model.config.n_layer, P + sampling.max_new_tokens)
    positions = positions_of(real)
    with ctx:
        logits, _ = model(ids, cache=cache, positions=positions, attn_mask=attention_mask(real))
    next_position, visible = positions[:, -1] + 1, real
    done = torch.zeros(B, dtype=torch.bool, device=ids.device)
    tokens, keep = [], []
    for step in range(sampling.max_new_tokens):
        token = sample_next(logits[:, -1].float(), ids, sampling, generator)
        token = torch.where(done, torch.full_like(token, eos_id), token)
        tokens.append(token)
        keep.append(~done)
        done = done | (token == eos_id)
        if step == sampling.max_new_tokens - 1 or bool(done.all()):
            break
        visible = F.pad(visible, (0, 1), value=True)
        with ctx:
            logits, _ = model(token[:, None], cache=cache, positions=next_position[:, None],
                              attn_mask=visible[:, None, None, :])
        next_position = next_position + 1
    return ids, real, torch.stack(tokens, 1), torch.stack(keep, 1)


def real_device(model):
    return next(model.parameters()).device


def completion_log_probs(model, ids, real, tokens, temperature, ctx):
    """The model's log-distribution over the vocabulary at each sampled position (B, N, V), by one teacher-forced
    forward pass over prompt + sample (with gradients where the caller allows them)."""
    full = torch.cat((ids, tokens), 1)
    full_real = F.pad(real, (0, tokens.size(1)), value=True)
    inputs, visible = full[:, :-1], full_real[:, :-1]
    targets = torch.full_like(inputs, -1)  # the model returns every position's logits when given targets
    with ctx:
        logits, _ = model(inputs, targets, positions=positions_of(visible), attn_mask=attention_mask(visible))
    return F.log_softmax(logits[:, ids.size(1) - 1:].float() / temperature, dim=-1)


def kl_and_entropy(log_p, log_ref):
    """Per position: KL(p || p_ref) and the entropy of p, exactly over the vocabulary."""
    p = log_p.exp()
    return (p * (log_p - log_ref)).sum(-1), -(p * log_p).sum(-1)


def decode_completions(tokenizer, tokens, keep):
    return [tokenizer.decode([t for t, k in zip(row, kept) if k and t != tokenizer.eos_id])
            for row, kept in zip(tokens.tolist(), keep.tolist())]


# ----------------------------------------------------------------------------- the run

def finetune(argv, signals):
    """One reward fine-tuning run; returns why it stopped."""
    rank, local_rank, world_size = runtime.world_info()
    master = rank == 0
    say = tqdm.write if master else (lambda message: None)

    # ------------------------------------------------------------------ settings
    given = parse_settings(DEFAULTS, argv, CHOICES, __doc__, TYPES)
    settings = {**DEFAULTS, **given}
    if not settings["init_from"]:
        raise ConfigError("init_from is not set: give --init_from=RUN_FOLDER (or a .pt file), the model to fine-tune")
    if settings["init_from"] == "resume":
        ckpt = checkpoint.load(os.path.join(settings["out_dir"], "ckpt_last.pt"))
        settings, changes = resume_settings(ckpt, given, DEFAULTS, CHOICES, TYPES, MAY_CHANGE)
        for key, old, new in changes:
            say(f"resume: {key} {old!r} -> {new!r}")
    else:
        ckpt = checkpoint.load(settings["init_from"], tokenizer=settings["tokenizer"])  # a run folder: its ckpt_best.pt
        if settings["reference"]:
            settings["reference"] = checkpoint.load(settings["reference"], tokenizer=settings["tokenizer"])["path"]
        else:
            settings["reference"] = ckpt["path"]
        saved_config = ckpt.get("config") or {}
        settings["dataset"] = settings["dataset"] or saved_config.get("dataset", "")
    check_settings(settings)
    check_reward_settings(settings)
    cfg = SimpleNamespace(**settings)
    say("config: " + json.dumps(settings))

    # ------------------------------------------------------------------ system
    ddp = world_size > 1
    device = runtime.start_ranks(runtime.pick_device(cfg.device), local_rank, world_size)
    dtype = runtime.pick_dtype(cfg.dtype, device)
    ctx = runtime.autocast(device, dtype)
    runtime.seed_everything(cfg.seed + rank)  # the sampling RNG: each rank draws its own stories

    # ------------------------------------------------------------------ the policy and the frozen reference
    model = checkpoint.build_model(ckpt, dropout=0.0)  # no dropout: samples and log-probs come from one model
    tokenizer = tk.from_export(ckpt["tokenizer"])
    reference_sha = fingerprint(cfg.reference)
    if cfg.init_from == "resume" and reference_sha != ckpt.get("reference_sha256"):
        raise InputError(f"reference {cfg.reference}: the file changed since this run was saved (a different "
                         f"reference would make it a different run)")
    reference_ckpt = ckpt if cfg.reference == ckpt["path"] else checkpoint.load(cfg.reference, tokenizer=cfg.tokenizer)
    reference = checkpoint.build_model(reference_ckpt, dropout=0.0)
    if reference.config.vocab_size != model.config.vocab_size or \
            reference_ckpt.get("tokenizer", {}).get("sha256") != ckpt["tokenizer"].get("sha256"):
        raise InputError(f"reference {cfg.reference}: its tokenizer is not the one of {ckpt['path']}")
    meta = ckpt.get("meta") or {}
    model.to(device)
    reference.to(device).eval().requires_grad_(False)
    say(f"policy from {ckpt['path']}: {model.num_params() / 1e6:.2f}M parameters; KL reference {cfg.reference}; "
        f"device {device}, dtype {dtype}, {world_size} rank(s)")
    if cfg.max_new_tokens >= model.config.block_size:
        raise ConfigError(f"max_new_tokens={cfg.max_new_tokens} leaves no room for a prompt in the model's "
                          f"{model.config.block_size}-token window")

    # ------------------------------------------------------------------ prompts, reward, validation data
    prompts = load_prompts(cfg.prompts, cfg.prompt_field, cfg.prompt_words)
    if len(prompts) <= cfg.eval_prompts:
        raise ConfigError(f"prompts {cfg.prompts}: {len(prompts)} prompts, but eval_prompts={cfg.eval_prompts} are "
                          f"held out for evaluation; lower eval_prompts")
    room = model.config.block_size - cfg.max_new_tokens - 1  # the prompt keeps its end, after <bos>
    prompt_ids = [[tokenizer.bos_id] + tokenizer.encode(text)[-room:] for text, _ in prompts]
    eval_set, train_set = range(cfg.eval_prompts), range(cfg.eval_prompts, len(prompts))
    reward_names = rewards.parse_names(cfg.reward)
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed)
    prompt_picker = torch.Generator().manual_seed(cfg.seed + 1000 * rank)
    eval_batches = None
    data_dir = os.path.join(cfg.data_root, cfg.dataset) if cfg.dataset else ""
    if data_dir and os.path.isfile(os.path.join(data_dir, "meta.json")):
        meta = open_dataset(data_dir)
        if tk.files_sha256(tk.load_dataset_tokenizer(meta, data_dir)) != ckpt["tokenizer"].get("sha256"):
            raise InputError(f"dataset {data_dir}: not tokenized with the model's tokenizer")
        eval_batches = {split: BatchSampler(data_dir, meta, split, model.config.block_size, cfg.batch_size, 0)
                        for split in ("train", "val")}
    elif "dataset" in given:
        raise InputError(f"dataset {data_dir}: no meta.json there (prepare it, or leave dataset unset)")
    else:
        say(f"no val loss: the model's dataset {data_dir or '(none recorded)'} is not there")

    # ------------------------------------------------------------------ optimizer and run state
    optimizer = make_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(enabled=(dtype == "float16"))
    state = RewardState()
    if cfg.init_from == "resume":
        state = resume_state(ckpt, optimizer, scaler, prompt_picker, rank, world_size, RewardState)
    ckpt = reference_ckpt = None

    raw_model = model
    model = runtime.wrap_for_training(model, cfg.compile, world_size, local_rank, device)

    # ------------------------------------------------------------------ output folder and log
    writes = master and not cfg.eval_only
    run_log = open_run_log(cfg, settings, state, enabled=writes, say=say)
    checkpoint_parts = dict(model=raw_model, optimizer=optimizer, scaler=scaler, state=state, config=settings,
                            meta=meta, tokenizer=tk.export(tokenizer), data_generator=prompt_picker, ddp=ddp,
                            extra={"reference_sha256": reference_sha})

    def score(indices, generator=None):
        """Sample one story per prompt index, score it: (ids, real, tokens, keep, rewards (B,), texts, parts)."""
        raw_model.eval()
        ids, real, tokens, keep = sample_batch(raw_model, [prompt_ids[i] for i in indices], sampling,
                                               tokenizer.eos_id, ctx, generator)
        raw_model.train()
        texts = decode_completions(tokenizer, tokens, keep)
        total, parts = rewards.score(reward_names, texts, [prompts[i][1] for i in indices], cfg)
        return ids, real, tokens, keep, torch.tensor(total, device=device), texts, parts

    @torch.no_grad()
    def evaluate_policy():
        """Reward, KL per token, entropy, distinct-2 and length of one story per held-out prompt, sampled with a
        fixed seed (a private generator: the training RNG is not touched)."""
        generator = torch.Generator(device=device).manual_seed(cfg.seed + 999)
        result, texts_all, kls, entropies, lengths = {"reward": []}, [], [], [], []
        for start in range(0, len(eval_set), cfg.batch_size):
            indices = list(eval_set[start:start + cfg.batch_size])
            ids, real, tokens, keep, total, texts, parts = score(indices, generator)
            raw_model.eval()
            log_p = completion_log_probs(raw_model, ids, real, tokens, cfg.temperature, ctx)
            raw_model.train()
            log_ref = completion_log_probs(reference, ids, real, tokens, cfg.temperature, ctx)
            kl, entropy = kl_and_entropy(log_p, log_ref)
            kls += kl[keep].tolist()
            entropies += entropy[keep].tolist()
            lengths += keep.sum(1).tolist()
            texts_all += texts
            result["reward"] += total.tolist()
            for name, values in parts.items():
                result.setdefault(f"reward_{name}", []).extend(values)
        out = {key: sum(values) / len(values) for key, values in result.items()}
        out.update(kl=sum(kls) / max(1, len(kls)), entropy=sum(entropies) / max(1, len(entropies)),
                   distinct_2=distinct_n(texts_all, 2), length=sum(lengths) / len(lengths))
        return out, [f"{prompts[i][0]} | {text}" for i, text in zip(eval_set, texts_all[:cfg.examples])]

    # ------------------------------------------------------------------ the training loop
    bar = tqdm(total=cfg.max_iters, initial=state.iter_num, desc="reward fine-tuning", unit="it",
               disable=not master or None)
    t_start = t_last = time.time()
    samples_at_last, tokens_at_last = state.samples_seen, state.tokens_seen
    while True:
        to_save = []

        due = state.iter_num % cfg.eval_interval == 0 or state.iter_num >= cfg.max_iters
        if cfg.eval_only or (due and state.last_eval_iter != state.iter_num):
            result, examples = evaluate_policy()
            if eval_batches is not None:
                result.update(evaluate(model, eval_batches, meta, cfg.eval_iters, cfg.seed, ctx, device))
                state.val_loss, state.val_bpb = result["val_loss"], result["val_bpb"]
            state.last_eval_iter, state.reward, state.kl = state.iter_num, result["reward"], result["kl"]
            val = f", val bpb {result['val_bpb']:.4f}" if "val_bpb" in result else ""
            say(f"eval {state.iter_num}: reward {result['reward']:.4f}, KL {result['kl']:.4f}/token, entropy "
                f"{result['entropy']:.3f}, distinct-2 {result['distinct_2']:.3f}, length {result['length']:.1f}{val}")
            for example in examples:
                say(f"  {example}")
            run_log.record({"type": "reward_eval", "iter": state.iter_num, "tokens": state.tokens_seen, **result,
                            "examples": "\n".join(examples), "time": time.time() - t_start})
            improved = result["reward"] > state.best_reward
            if improved:
                state.best_reward = result["reward"]
            if state.iter_num > 0 and not cfg.eval_only:
                to_save = ["ckpt_last.pt"] * (cfg.always_save_checkpoint or improved) + ["ckpt_best.pt"] * improved

        state.stop_reason = stop_reason(state, cfg, signals.requested(ddp, device))  # no time budget here
        to_save = checkpoints_to_write(to_save, state, cfg)  # a signal saves ckpt_last.pt too
        if to_save:
            save_checkpoint(cfg.out_dir, to_save, **checkpoint_parts)
        if state.stop_reason is not None:
            break

        # sample and score a batch, then ppo_epochs optimizer steps on it
        lr = learning_rate_at(state.iter_num, cfg)
        set_learning_rate(optimizer, lr)
        picks = torch.randint(len(train_set), (cfg.batch_size,), generator=prompt_picker)
        ids, real, tokens, keep, reward, _, _ = score([train_set[i] for i in picks.tolist()])
        batch_mean = reward.mean().item()
        if cfg.baseline == "batch":
            baseline = batch_mean
        else:  # running mean; the first batch starts it
            baseline = batch_mean if state.baseline is None else state.baseline
            state.baseline = cfg.baseline_decay * baseline + (1 - cfg.baseline_decay) * batch_mean
        advantage = (reward - baseline)[:, None]
        mask = keep.float()
        with torch.no_grad():
            log_ref = completion_log_probs(reference, ids, real, tokens, cfg.temperature, ctx)
        old_log_prob = None
        for _ in range(cfg.ppo_epochs):
            log_p = completion_log_probs(model, ids, real, tokens, cfg.temperature, ctx)
            log_prob = log_p.gather(-1, tokens[..., None]).squeeze(-1)
            if old_log_prob is None:
                old_log_prob = log_prob.detach()
            # the first step's ratio is 1 and its gradient is REINFORCE's; later steps are clipped as in PPO
            ratio = (log_prob - old_log_prob).exp()
            policy_term = -torch.minimum(ratio * advantage,
                                         ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range) * advantage)
            kl, entropy = kl_and_entropy(log_p, log_ref)
            loss = ((policy_term + cfg.kl_coef * kl) * mask).sum(1).mean()
            if not math.isfinite(loss.item()):
                break
            scaler.scale(loss).backward()
            optimizer_step(model, optimizer, scaler, cfg.grad_clip)
        if not math.isfinite(loss.item()):
            stop_diverged(state, loss.item(), cfg.out_dir, say)
            break
        state.iter_num += 1
        state.samples_seen += cfg.batch_size * world_size
        state.tokens_seen += int(mask.sum().item()) * world_size
        bar.update(1)

        if state.iter_num % cfg.log_interval == 0 or state.iter_num == cfg.max_iters:
            dt = max(time.time() - t_last, 1e-9)
            n_kept = mask.sum().clamp(min=1)
            record = {"type": "train", "iter": state.iter_num, "tokens": state.tokens_seen, "loss": loss.item(),
                      "reward": batch_mean, "baseline": baseline, "kl": ((kl * mask).sum() / n_kept).item(),
                      "entropy": ((entropy.detach() * mask).sum() / n_kept).item(), "lr": lr,
                      "samples_per_s": (state.samples_seen - samples_at_last) / dt,
                      "tokens_per_s": (state.tokens_seen - tokens_at_last) / dt}
            run_log.record(record)
            bar.set_postfix(reward=f"{batch_mean:.3f}", kl=f"{record['kl']:.3f}")
            t_last, samples_at_last, tokens_at_last = time.time(), state.samples_seen, state.tokens_seen
    bar.close()

    # ------------------------------------------------------------------ the end
    elapsed = time.time() - t_start
    run_log.close()
    if state.stop_reason in SIGNAL_STOPS and master:
        report_signal_stop(state, cfg, __file__, world_size)
    elif writes:
        evals = [r for r in log_records_until(os.path.join(cfg.out_dir, "log.jsonl"), state.iter_num)
                 if r.get("type") == "reward_eval"]
        first, last = evals[0], evals[-1]
        summary = {"init_from": cfg.reference, "out_dir": cfg.out_dir, "reward": cfg.reward, "kl_coef": cfg.kl_coef,
                   "iters": state.iter_num, "samples": state.samples_seen, "tokens": state.tokens_seen,
                   "reward_start": first["reward"], "reward_end": last["reward"], "best_reward": state.best_reward,
                   "kl_end": last["kl"], "distinct_2_start": first["distinct_2"], "distinct_2_end": last["distinct_2"],
                   "val_bpb_start": first.get("val_bpb"), "val_bpb_end": last.get("val_bpb"), "seconds": elapsed,
                   "stop_reason": state.stop_reason}
        write_json_atomic(os.path.join(cfg.out_dir, "summary.json"), summary)
        say(f"done ({state.stop_reason}): {state.iter_num} iters, {state.samples_seen:,} samples in {elapsed:.0f}s; "
            f"eval reward {first['reward']:.4f} -> {last['reward']:.4f}, KL {last['kl']:.4f}/token, distinct-2 "
            f"{first['distinct_2']:.3f} -> {last['distinct_2']:.3f} -> {cfg.out_dir}/")
    return state.stop_reason  # main() then leaves the process group under torchrun


def main(argv=None):
    run_training_script(finetune, argv)


if __name__ == "__main__":
    main()
