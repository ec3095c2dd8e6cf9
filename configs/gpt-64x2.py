# Seed grid: hidden 64, 2 layers, 8 heads. About 4.5M parameters with the seed's ~68k vocabulary (mostly embeddings).
# Meant for a GPU; on several: torchrun --standalone --nproc_per_node=N training-inference/train.py configs/gpt-64x2.py
recipe = "classic"
n_layer = 2
n_head = 8
n_embd = 64
block_size = 1024
batch_size = 32
gradient_accumulation_steps = 8  # total across ranks: runs on 1, 2, 4 or 8 GPUs
# AdamW at nanoGPT-style settings, as the original Regional-TinyStories trained this grid (train.py's default,
# Muon, was chosen by measurement on CPU-sized models only)
optimizer = "adamw"
learning_rate = 1e-3
min_lr = 1e-4
max_iters = 20000
warmup_iters = 1000
eval_interval = 500
eval_iters = 100
dropout = 0.1
compile = True
