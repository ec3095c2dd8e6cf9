# ~5M parameters with a 4096-token vocabulary: still trainable on a laptop CPU in under an hour.
recipe = "modern"
n_layer = 5
n_head = 8
n_embd = 256
block_size = 256
batch_size = 32
learning_rate = 1e-3
min_lr = 1e-4
max_iters = 5000
warmup_iters = 200
eval_interval = 250
dropout = 0.1
