# ~1.3M parameters with a 4096-token vocabulary: the CPU quickstart size.
recipe = "modern"
n_layer = 4
n_head = 4
n_embd = 128
block_size = 256
batch_size = 16
learning_rate = 2e-3
min_lr = 2e-4
max_iters = 1500
warmup_iters = 100
eval_interval = 100
dropout = 0.1
