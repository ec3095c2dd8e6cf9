# ~0.46M parameters with a 4096-token vocabulary: a smoke-test model that trains in a minute on a laptop CPU.
recipe = "modern"
n_layer = 4
n_head = 4
n_embd = 64
block_size = 128
batch_size = 16
learning_rate = 2e-3
min_lr = 2e-4
max_iters = 1000
warmup_iters = 50
eval_interval = 100
dropout = 0.0
