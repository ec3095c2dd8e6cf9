# The CPU quickstart (scripts/quickstart.sh): one language of the bundled demo corpus, trained for at most
# 5 minutes (max_seconds) on a laptop-class CPU. Chosen by the sweep in the README (held-out bits per byte after
# 300 s of training, fp32); in 5 minutes on 2 cores a small model that sees the corpus about once beats a larger
# one that sees half of it. The learning-rate schedule is paced by the time budget, so a faster machine simply
# gets more steps before the same decay.
recipe = "modern"
n_layer = 4
n_head = 4
n_embd = 128
block_size = 256
batch_size = 16
doc_aligned = True     # windows start at <bos>: every window begins a story, as generation does
dropout = 0.0          # attention-probability dropout costs ~2x on CPU; the time budget limits overfitting
weight_decay = 0.1
optimizer = "muon"     # Muon on the blocks' matrices at muon_lr (train.py's 0.02), AdamW on the embedding/head:
learning_rate = 8e-3   # the embedding's, which suits a higher rate under Muon (scripts/bench_quality.py)
min_lr = 8e-4
warmup_iters = 50
max_iters = 100000     # the time budget ends the run first; it paces the cosine schedule
max_seconds = 300
eval_interval = 50
eval_iters = 10
early_stop_patience = 0
