"""
Pre-train a small student by knowledge distillation from a bigger teacher (seed 003), in the shape of train.py.

    python training-inference/distill.py configs/distill-demo.py --teacher=out/teacher --out_dir=out/student
    python training-inference/distill.py configs/micro.py --dataset=hindi-sarvam --teacher=sarvamai/sarvam-1
    python training-inference/distill.py --init_from=resume --out_dir=out/student --max_iters=4000
    torchrun --standalone --nproc_per_node=4 training-inference/distill.py configs/gpt-64x2.py --teacher=out/big

The student learns from both the data and the teacher's next-token distribution:

    loss = alpha * T^2 * KL(softmax(z_teacher / T) || softmax(z_student / T)) + (1 - alpha) * CE(z_student, data)

alpha and the temperature T may move linearly to alpha_end / temperature_end over the run. The teacher is a
checkpoint of this project (run folder, .pt, hf:OWNER/REPO/FILE.pt) or a Hugging Face causal LM (local folder or
hub id, loaded with transformers); either way its tokenizer must be the one the dataset was prepared with (same
vocabulary, same ids), and a teacher whose tokenizer differs is refused. The teacher never trains: it runs in eval
mode without gradients, in bf16 on GPUs and on CPUs with fast bf16 products. teacher_cache=DIR stores its top-k
probabilities for every non-overlapping window of the train split once, so later student runs read them instead of
running the teacher.

Everything else is train.py: the same settings (plus the ones above), the same checkpoints (sample.py and serve.py
load them), log.jsonl with student CE, KD loss and val loss / bits per byte, exact resume, SIGINT / SIGTERM save
and stop, CPU / GPU / torchrun.
"""
import json
import math
import os
import shlex
import time
from contextlib import nullcontext
from types import SimpleNamespace

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # large CPU tensors on 2 MB pages, as in train.py

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from regional_tinystories import checkpoint, runtime
from regional_tinystories import tokenizer as tk
from regional_tinystories.config import ConfigError, parse_settings
from regional_tinystories.dataset import bits_per_byte
from regional_tinystories.errors import InputError, one_line
from regional_tinystories.files import write_json_atomic
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
    sha256_of_files,
    starting_point,
    stop_diverged,
    stop_reason,
    tokens_per_second,
    write_summary,
)

DEFAULTS = dict(
    # I/O
    out_dir="out/distill",
    dataset="demo-hindi",          # folder under data_root written by prepare.py, with the teacher's tokenizer
    data_root="data",
    init_from="scratch",           # the student: 'scratch', 'resume' (out_dir/ckpt_last.pt), a .pt path or run folder, ...
    tokenizer="",                  # with init_from a nanoGPT .pt (which carries none): its tokenizer, e.g. tiktoken:gpt2
    eval_interval=200,
    eval_iters=20,
    log_interval=10,
    eval_only=False,
    always_save_checkpoint=True,
    wandb_mode="disabled",
    wandb_project="regional-tinystories",
    wandb_run_name="",
    # distillation
    teacher="",                    # run folder / .pt / hf:OWNER/REPO/FILE.pt, or a transformers folder or hub id
    teacher_type="auto",           # 'checkpoint' (this project's), 'transformers', or 'auto' (from what teacher is)
    teacher_tokenizer="",          # a nanoGPT teacher .pt carries no tokenizer: name it (e.g. sutra, tiktoken:gpt2)
    teacher_dtype="auto",          # the teacher's precision; 'auto' = bf16 on GPUs and fast-bf16 CPUs
    alpha=0.5,                     # weight of the KD term; 1 - alpha weighs the cross-entropy on the data
    alpha_end=None,                # if set, alpha moves linearly to this by max_iters
    temperature=2.0,               # softens both distributions; the KD term is scaled by T^2
    temperature_end=None,          # if set, the temperature moves linearly to this by max_iters
    teacher_cache="",              # folder for the teacher's top-k probabilities (built once, then reused); '' = live
    teacher_topk=32,               # probabilities kept per position in the cache (the rest is one "other" outcome)
    # data
    batch_size=32,
    block_size=256,
    gradient_accumulation_steps=1,
    doc_aligned=False,
    loss_on="all",                 # train.py's setting, kept so one config drives both; distillation learns every token
    # model (the student)
    recipe="modern",
    n_layer=4,
    n_head=4,
    n_embd=128,
    dropout=0.0,
    bias=False,
    qk_norm=False,
    tie_weights=True,
    # optimizer: 'muon' or 'adamw', as in train.py
    optimizer="muon",
    learning_rate=1e-3,
    muon_lr=0.02,
    muon_momentum=0.95,
    max_iters=2000,
    max_seconds=0.0,               # > 0: evaluate, save and stop once training has run this long (a time budget)
    weight_decay=0.1,
    beta1=0.9,
    beta2=0.95,
    grad_clip=1.0,
    # learning-rate schedule
    lr_schedule="cosine",
    warmup_iters=100,
    lr_decay_iters=None,
    min_lr=1e-4,
    wsd_decay_fraction=0.2,
    # early stopping on validation loss
    early_stop_patience=0,
    early_stop_min_delta=0.0,
    # system
    device="auto",
    dtype="auto",
    compile=False,
    seed=1337,
)
DTYPES = ("auto", "float32", "bfloat16", "float16")
CHOICES = dict(recipe=("classic", "modern"), loss_on=("all", "story"), lr_schedule=("cosine", "wsd", "constant"), dtype=DTYPES,
               optimizer=("adamw", "muon"), teacher_dtype=DTYPES, teacher_type=("auto", "checkpoint", "transformers"),
               wandb_mode=("online", "offline", "disabled"))
TYPES = dict(lr_decay_iters=int, alpha_end=float, temperature_end=float)


def check_distill_settings(settings):
    for key in ("alpha", "alpha_end"):
        if settings[key] is not None and not 0 <= settings[key] <= 1:
            raise ConfigError(f"{key}={settings[key]} must be in [0, 1]")
    for key in ("temperature", "temperature_end"):
        if settings[key] is not None and not (math.isfinite(settings[key]) and settings[key] > 0):
            raise ConfigError(f"{key}={settings[key]} must be positive")
    if settings["loss_on"] != "all":
        raise ConfigError(f"loss_on={settings['loss_on']!r}: distill.py learns every token from the teacher, the "
                          f"instruction block too; use loss_on=all (train.py's loss_on=story masks it)")
    if settings["teacher_topk"] < 1:
        raise ConfigError(f"teacher_topk={settings['teacher_topk']} must be at least 1")
    if settings["teacher_cache"] and settings["temperature_end"] is not None:
        raise ConfigError("temperature_end cannot be used with teacher_cache: the cache holds the teacher's "
                          "probabilities at one temperature")


# ----------------------------------------------------------------------------- the loss

def kd_loss(student_logits, teacher_logits, temperature):
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), the mean over positions. Logits are (..., V)."""
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (teacher.exp() * (teacher - student)).sum(dim=-1)
    return temperature ** 2 * kl.mean()


def kd_loss_top_k(student_logits, teacher_log_probs, teacher_ids, temperature):
    """kd_loss from the teacher's top-k only (the cache): teacher_log_probs (..., k) are its log-probabilities at
    temperature T (over the whole vocabulary) of teacher_ids (..., k). The KL is taken over k + 1 outcomes: each
    of the k ids, and "any other id", whose probability is what the k leave. With k = V it is kd_loss. (Renormalising
    the teacher over its k ids instead would teach the student to put all its mass there: much worse at T > 1.)"""
    student = F.log_softmax(student_logits.float() / temperature, dim=-1).gather(-1, teacher_ids.long())
    teacher = teacher_log_probs.float()
    teacher_rest = (1 - teacher.exp().sum(-1)).clamp(min=1e-8)
    student_rest = (1 - student.exp().sum(-1)).clamp(min=1e-8)
    kl = (teacher.exp() * (teacher - student)).sum(-1) + teacher_rest * (teacher_rest.log() - student_rest.log())
    return temperature ** 2 * kl.mean()


def scheduled(start, end, it, max_iters):
    """start, moving linearly to end by max_iters (end None: constant)."""
    if end is None:
        return start
    return start + (end - start) * min(1.0, it / max(1, max_iters))


# ----------------------------------------------------------------------------- the teacher

def teacher_kind(source, requested):
    """'checkpoint' for this project's checkpoints (a .pt file, a run folder, hf:OWNER/REPO/FILE.pt), else
    'transformers' (a folder with config.json, or a hub id)."""
    if requested != "auto":
        return requested
    if source.endswith(".pt") or os.path.isfile(source):
        return "checkpoint"
    if os.path.isdir(source):
        return "transformers" if os.path.isfile(os.path.join(source, "config.json")) else "checkpoint"
    if source.startswith(("/", ".")):  # a path that is not there: checkpoint.resolve says so
        return "checkpoint"
    return "transformers"  # a hub id (hf:ID too)


def transformers_dir(source):
    """A local folder holding a transformers model: source itself, or the hub snapshot of an id (downloaded once,
    token from HF_TOKEN in the environment)."""
    name = source.removeprefix("hf:")
    if os.path.isdir(name):
        return name
    from huggingface_hub import snapshot_download
    try:
        return snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
    except Exception as e:
        raise InputError(f"teacher {source}: not a local folder, and the hub download failed ({one_line(e)})") from None


def locate_teacher(source, kind):
    """(the local file or folder, the SHA-256 of the teacher's files): what resume and the cache check it by."""
    if kind == "checkpoint":
        path = checkpoint.resolve(source)  # a run folder: its ckpt_best.pt
        return path, sha256_of_files([path])
    folder = transformers_dir(source)
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if f.endswith((".json", ".safetensors", ".bin", ".model")))
    return folder, sha256_of_files(files)


def load_teacher(source, kind, location, meta, tokenizer, data_dir, block_size, device, dtype, teacher_tokenizer=""):
    """(logits function x (B, T) -> (B, T, V) float32, a one-line description). Refuses a teacher whose
    tokenizer or vocabulary differs from the dataset's, or whose window is shorter than block_size. A teacher may
    have more output rows than the vocabulary has ids (nanoGPT pads GPT-2's 50257 to 50304): those are cut off."""
    vocab = meta["vocab_size"]
    mismatch = (f"teacher {source}: its tokenizer is {{}}, not the one dataset {data_dir} was prepared with "
                f"({tk.describe(tokenizer.spec)}, {vocab} ids); prepare the data with the teacher's tokenizer "
                f"(--tokenizer=from:TEACHER_DATA_DIR or hf:TEACHER)")
    if kind == "checkpoint":
        ckpt = checkpoint.load(location, tokenizer=teacher_tokenizer)
        model = checkpoint.build_model(ckpt)
        recorded = ckpt.get("tokenizer", {})
        spec = recorded.get("spec")
        described = f"{tk.describe(spec) if isinstance(spec, dict) else 'unknown'}, {model.config.vocab_size} ids"
        same = recorded.get("sha256") == tk.files_sha256(tokenizer)
        if not same or model.config.vocab_size < vocab:
            raise InputError(mismatch.format(described))
        if model.config.block_size < block_size:
            raise InputError(f"teacher {source}: its window is {model.config.block_size} tokens, shorter than the "
                             f"student's block_size {block_size}")
        model.to(device).eval().requires_grad_(False)
        ctx = runtime.autocast(device, dtype)

        def logits(x):
            with torch.no_grad(), ctx:
                return model(x, x)[0][..., :vocab].float()  # given targets, the model returns every position
        return logits, (f"teacher {location}: {model.num_params() / 1e6:.2f}M parameters, "
                        f"{model.config.n_layer} layers x {model.config.n_embd}, {dtype}")

    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        teacher_tokenizer = AutoTokenizer.from_pretrained(location)
    except Exception as e:
        raise InputError(f"teacher {source}: its tokenizer could not be loaded ({one_line(e)})") from None
    same = tokenizer.spec["kind"] == "hf" and tokenizer.tok.get_vocab() == teacher_tokenizer.get_vocab()
    if not same:
        raise InputError(mismatch.format(f"hf:{source}, {len(teacher_tokenizer)} ids"))
    try:
        model = AutoModelForCausalLM.from_pretrained(location, dtype=getattr(torch, dtype))
    except Exception as e:
        raise InputError(f"teacher {source}: not loadable as a transformers causal LM ({one_line(e)})") from None
    width = model.get_output_embeddings().weight.shape[0]
    if width < vocab:
        raise InputError(f"teacher {source}: its output layer has {width} logits, fewer than the {vocab} ids of "
                         f"dataset {data_dir}")
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and positions < block_size:
        raise InputError(f"teacher {source}: its window is {positions} tokens, shorter than the student's "
                         f"block_size {block_size}")
    model.to(device).eval().requires_grad_(False)

    def logits(x):
        with torch.no_grad():  # a padded output layer (width > vocab) has logits for ids no text contains
            return model(input_ids=x).logits[..., :vocab].float()
    return logits, f"teacher {source}: transformers {type(model).__name__}, {model.num_parameters() / 1e6:.2f}M parameters, {dtype}"


@torch.no_grad()
def teacher_val_loss(teacher_logits, sampler, eval_iters, seed, device):
    """The teacher's mean loss on the batches evaluate() scores the student on (same re-seeding)."""
    sampler.generator.manual_seed(seed + 999)
    losses = []
    for _ in range(eval_iters):
        x, y = (t.to(device) for t in sampler.next_batch())
        z = teacher_logits(x)
        losses.append(F.cross_entropy(z.view(-1, z.size(-1)), y.reshape(-1)).item())
    return sum(losses) / len(losses)


# ----------------------------------------------------------------------------- the teacher cache

class CachedTeacherBatches:
    """Random windows of the train split with the teacher's top-k log-probabilities, from a cache folder. The cache covers
    the non-overlapping windows 0, block_size, 2 * block_size, ... of train.bin (a window's teacher logits depend
    on where it starts, so only these windows are drawn). Window picks come from a seeded generator, saved in
    checkpoints like BatchSampler's."""

    def __init__(self, cache_dir, data_dir, meta, block_size, batch_size, seed):
        self.path = os.path.join(data_dir, "train.bin")
        self.dtype = np.dtype(meta["dtype"])
        self.log_probs = np.load(os.path.join(cache_dir, "log_probs.npy"), mmap_mode="r")
        self.ids = np.load(os.path.join(cache_dir, "ids.npy"), mmap_mode="r")
        self.block_size, self.batch_size = block_size, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self):
        windows = torch.randint(len(self.log_probs), (self.batch_size,), generator=self.generator).tolist()
        data = np.memmap(self.path, dtype=self.dtype, mode="r")
        rows = np.stack([data[w * self.block_size: (w + 1) * self.block_size + 1] for w in windows]).astype(np.int64)
        batch = torch.from_numpy(rows)
        log_probs = torch.from_numpy(np.stack([self.log_probs[w] for w in windows]).astype(np.float32))
        ids = torch.from_numpy(np.stack([self.ids[w] for w in windows]).astype(np.int64))
        return batch[:, :-1], batch[:, 1:], log_probs, ids


def cache_key(teacher_sha, meta, block_size, topk, temperature):
    """What a cache was built from: a cache built from anything else is refused rather than silently used."""
    return {"teacher_sha256": teacher_sha, "tokenizer_sha256": meta.get("tokenizer_sha256"),
            "train_tokens": meta["splits"]["train"]["tokens"], "block_size": block_size, "topk": topk,
            "temperature": temperature}


def cache_problem(cache_dir, key):
    """Why the cache folder cannot be used as it is ('missing' when it is not built yet), or None."""
    path = os.path.join(cache_dir, "cache.json")
    if not os.path.isfile(path):
        return "missing"
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    differ = [f"{k} {saved.get(k)!r} (this run: {v!r})" for k, v in key.items() if saved.get(k) != v]
    if differ:
        return (f"teacher_cache {cache_dir}: built for a different run ({'; '.join(differ)}); give another "
                f"teacher_cache folder or delete this one")
    return None


@torch.no_grad()
def build_teacher_cache(cache_dir, key, teacher_logits, data_dir, meta, block_size, topk, temperature, device, say):
    """The teacher's top-k log-probabilities at the temperature (float16) and their ids, for every non-overlapping
    window of train.bin, written into cache_dir; cache.json, written last and atomically, marks it complete (a
    killed build is redone)."""
    os.makedirs(cache_dir, exist_ok=True)
    data = np.memmap(os.path.join(data_dir, "train.bin"), dtype=np.dtype(meta["dtype"]), mode="r")
    n_windows = (len(data) - 1) // block_size
    id_dtype = np.uint16 if meta["vocab_size"] <= 1 << 16 else np.int32
    size = n_windows * block_size * topk * (2 + np.dtype(id_dtype).itemsize)
    say(f"teacher cache: top-{topk} probabilities at T={temperature:g} of {n_windows:,} windows x {block_size} tokens ({size / 1e6:,.1f} MB) "
        f"-> {cache_dir}")
    arrays = {}
    for name, dtype in (("log_probs", np.float16), ("ids", id_dtype)):
        arrays[name] = np.lib.format.open_memmap(os.path.join(cache_dir, f"{name}.npy.tmp"), mode="w+", dtype=dtype,
                                                 shape=(n_windows, block_size, topk))
    step = 16
    for start in tqdm(range(0, n_windows, step), desc="teacher cache", unit="batch", disable=None):
        windows = range(start, min(start + step, n_windows))
        x = torch.from_numpy(np.stack([data[w * block_size:(w + 1) * block_size] for w in windows]).astype(np.int64))
        top = torch.topk(F.log_softmax(teacher_logits(x.to(device)) / temperature, dim=-1), topk, dim=-1)
        arrays["log_probs"][start:start + len(windows)] = top.values.cpu().numpy().astype(np.float16)
        arrays["ids"][start:start + len(windows)] = top.indices.cpu().numpy().astype(id_dtype)
    for name, array in arrays.items():
        array.flush()
        os.replace(os.path.join(cache_dir, f"{name}.npy.tmp"), os.path.join(cache_dir, f"{name}.npy"))
    write_json_atomic(os.path.join(cache_dir, "cache.json"), {**key, "windows": n_windows})


# ----------------------------------------------------------------------------- the run

def distill(argv, signals):
    """One distillation run; returns why it stopped."""
    rank, local_rank, world_size = runtime.world_info()
    master = rank == 0
    say = tqdm.write if master else (lambda message: None)

    # ------------------------------------------------------------------ settings
    given = parse_settings(DEFAULTS, argv, CHOICES, __doc__, TYPES)
    settings, ckpt, changes = starting_point(given, DEFAULTS, CHOICES, TYPES)  # ckpt: the student's, None from scratch
    for key, old, new in changes:
        say(f"resume: {key} {old!r} -> {new!r}")
    check_settings(settings)
    check_distill_settings(settings)
    if not settings["teacher"]:
        raise ConfigError("teacher is not set: give --teacher=RUN_FOLDER, a .pt file, or a transformers model "
                          "folder / hub id")
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
    meta = open_dataset(data_dir)
    tokenizer = tk.load_dataset_tokenizer(meta, data_dir)
    eval_batches = {split: BatchSampler(data_dir, meta, split, cfg.block_size, cfg.batch_size, 0, cfg.doc_aligned)
                    for split in ("train", "val")}
    tokens_per_iter = cfg.batch_size * cfg.block_size * accum_steps * world_size

    # ------------------------------------------------------------------ the teacher (frozen) and its cache
    kind = teacher_kind(cfg.teacher, cfg.teacher_type)
    teacher_location, teacher_sha = locate_teacher(cfg.teacher, kind)
    if cfg.init_from == "resume" and ckpt.get("teacher_sha256") not in (None, teacher_sha):
        raise InputError(f"teacher {cfg.teacher}: its files changed since this run was saved (a different teacher "
                         f"would make it a different run)")
    teacher_logits = None
    key = cache_key(teacher_sha, meta, cfg.block_size, cfg.teacher_topk, cfg.temperature)
    problem = cache_problem(cfg.teacher_cache, key) if cfg.teacher_cache else "missing"
    if problem not in (None, "missing"):
        raise InputError(problem)
    if problem == "missing":  # no cache, or one to build: the teacher is needed
        teacher_dtype = runtime.pick_dtype(cfg.teacher_dtype, device)
        with torch.random.fork_rng(devices=[]):  # building the teacher must not move the student's RNG
            teacher_logits, description = load_teacher(cfg.teacher, kind, teacher_location, meta, tokenizer,
                                                        data_dir, cfg.block_size, device, teacher_dtype,
                                                        cfg.teacher_tokenizer)
        say(description)
        if cfg.teacher_cache:
            if master:
                build_teacher_cache(cfg.teacher_cache, key, teacher_logits, data_dir, meta, cfg.block_size,
                                    cfg.teacher_topk, cfg.temperature, device, say)
            if ddp:
                torch.distributed.barrier()
            teacher_logits = None  # from here on the cache stands in for it
    if cfg.teacher_cache:
        say(f"teacher cache {cfg.teacher_cache}: top-{cfg.teacher_topk} probabilities, the teacher is not run")
        train_batches = CachedTeacherBatches(cfg.teacher_cache, data_dir, meta, cfg.block_size, cfg.batch_size,
                                             cfg.seed + 1000 * rank)
    else:
        train_batches = BatchSampler(data_dir, meta, "train", cfg.block_size, cfg.batch_size, cfg.seed + 1000 * rank,
                                     cfg.doc_aligned)

    # ------------------------------------------------------------------ the student
    if ckpt is None:
        model = new_model(cfg, meta["vocab_size"])
    else:
        model = checkpoint.build_model(ckpt, dropout=cfg.dropout)
        recorded = ckpt.get("tokenizer", {}).get("sha256")
        if model.config.vocab_size != meta["vocab_size"] or recorded not in (None, tk.files_sha256(tokenizer)):
            raise checkpoint.CheckpointError(f"checkpoint {ckpt['path']}: its tokenizer is not the one of dataset "
                                             f"{data_dir}; prepare the data with the checkpoint's tokenizer")
        say(f"student from {ckpt['path']} (iteration {ckpt.get('iter_num', 0)})")
    model.to(device)
    say(f"student: {model.config.recipe}, {model.config.n_layer} layers x {model.config.n_embd} hidden, "
        f"{model.config.n_head} heads, vocab {model.config.vocab_size}: {model.num_params() / 1e6:.2f}M parameters")
    say(f"device {device}, dtype {dtype}, {world_size} rank(s), {tokens_per_iter:,} tokens per iteration")

    # ------------------------------------------------------------------ optimizer and run state
    optimizer = make_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(enabled=(dtype == "float16"))
    state = TrainState()
    if cfg.init_from == "resume":
        state = resume_state(ckpt, optimizer, scaler, train_batches.generator, rank, world_size)
    ckpt = None

    raw_model = model
    model = runtime.wrap_for_training(model, cfg.compile, world_size, local_rank, device)

    # ------------------------------------------------------------------ output folder and log
    writes = master and not cfg.eval_only
    run_log = open_run_log(cfg, settings, state, enabled=writes, say=say)
    checkpoint_parts = dict(model=raw_model, optimizer=optimizer, scaler=scaler, state=state, config=settings,
                            meta=meta, tokenizer=tk.export(tokenizer), data_generator=train_batches.generator, ddp=ddp,
                            extra={"teacher_sha256": teacher_sha})
    if teacher_logits is not None and cfg.init_from != "resume" and not cfg.eval_only:
        loss = teacher_val_loss(teacher_logits, eval_batches["val"], cfg.eval_iters, cfg.seed, device)
        result = {"teacher_val_loss": loss, "teacher_val_bpb": bits_per_byte(loss, meta, "val")}
        say(f"teacher: val {loss:.4f}, val bpb {result['teacher_val_bpb']:.4f}")
        run_log.record({"type": "teacher_eval", "iter": 0, **result})

    # ------------------------------------------------------------------ the training loop
    bar = tqdm(total=cfg.max_iters, initial=state.iter_num, desc="distilling", unit="it", disable=not master or None)
    t_start = t_last = time.time()
    tokens_at_last = state.tokens_seen
    while True:
        to_save = []

        # the time budget by the rank-slowest clock, so that every rank stops at the same iteration
        out_of_time = cfg.max_seconds > 0 and elapsed_seconds(t_start, ddp, device) >= cfg.max_seconds
        due = state.iter_num % cfg.eval_interval == 0 or state.iter_num >= cfg.max_iters or out_of_time
        if cfg.eval_only or (due and state.last_eval_iter != state.iter_num):
            result = evaluate(model, eval_batches, meta, cfg.eval_iters, cfg.seed, ctx, device)
            to_save = record_evaluation(result, state, cfg, run_log, t_start, say)

        state.stop_reason = stop_reason(state, cfg, signals.requested(ddp, device), out_of_time)
        to_save = checkpoints_to_write(to_save, state, cfg)  # a signal saves ckpt_last.pt too
        if to_save:
            save_checkpoint(cfg.out_dir, to_save, **checkpoint_parts)
        if state.stop_reason is not None:
            break

        # one optimizer step: the student's loss mixes the data's cross-entropy with the teacher's distribution
        lr = learning_rate_at(state.iter_num, cfg)
        alpha = scheduled(cfg.alpha, cfg.alpha_end, state.iter_num, cfg.max_iters)
        temperature = scheduled(cfg.temperature, cfg.temperature_end, state.iter_num, cfg.max_iters)
        set_learning_rate(optimizer, lr)
        loss_sum = ce_sum = kd_sum = 0.0
        for micro in range(accum_steps):
            if teacher_logits is None:  # from the cache
                x, y, top_log_probs, top_ids = (t.to(device, non_blocking=True) for t in train_batches.next_batch())
            else:
                x, y = (t.to(device, non_blocking=True) for t in train_batches.next_batch())
            sync = nullcontext() if not ddp or micro == accum_steps - 1 else model.no_sync()
            with sync:
                with ctx:
                    logits, ce = model(x, y)
                if teacher_logits is None:
                    kd = kd_loss_top_k(logits, top_log_probs, top_ids, temperature)
                else:
                    kd = kd_loss(logits, teacher_logits(x), temperature)
                loss = (alpha * kd + (1 - alpha) * ce) / accum_steps
                scaler.scale(loss).backward()
            loss_sum += loss.item()
            ce_sum += ce.item() / accum_steps
            kd_sum += kd.item() / accum_steps
        if not math.isfinite(loss_sum):
            stop_diverged(state, loss_sum, cfg.out_dir, say)
            break
        optimizer_step(model, optimizer, scaler, cfg.grad_clip)
        state.iter_num += 1
        state.tokens_seen += tokens_per_iter
        bar.update(1)

        if state.iter_num % cfg.log_interval == 0 or state.iter_num == cfg.max_iters:
            tok_per_s = tokens_per_second(state.tokens_seen, tokens_at_last, t_last)
            run_log.record({"type": "train", "iter": state.iter_num, "tokens": state.tokens_seen, "loss": loss_sum,
                            "ce": ce_sum, "kd": kd_sum, "alpha": alpha, "temperature": temperature, "lr": lr,
                            "tokens_per_s": tok_per_s})
            bar.set_postfix(ce=f"{ce_sum:.3f}", kd=f"{kd_sum:.3f}", tok_s=f"{tok_per_s:,.0f}")
            t_last, tokens_at_last = time.time(), state.tokens_seen
    bar.close()

    # ------------------------------------------------------------------ the end
    elapsed = time.time() - t_start
    run_log.close()
    if state.stop_reason in SIGNAL_STOPS and master:
        report_signal_stop(state, cfg, __file__, world_size)
    elif writes:
        command = shlex.join(["python", "training-inference/distill.py", *argv])
        summary = write_summary(cfg, meta, raw_model, state, elapsed, command=command)
        val = "no eval" if state.val_loss is None else f"val loss {state.val_loss:.4f} (bpb {state.val_bpb:.4f})"
        say(f"done ({state.stop_reason}): {state.iter_num} iters, {state.tokens_seen:,} tokens in {elapsed:.0f}s, "
            f"{val}, {summary['params'] / 1e6:.2f}M params -> {cfg.out_dir}/")
    return state.stop_reason  # main() then leaves the process group under torchrun


def main(argv=None):
    run_training_script(distill, argv)


if __name__ == "__main__":
    main()
