# ~10M parameters with a 4096-token vocabulary: the model scripts/bench_train.py and bench_sample.py measure.
recipe = "modern"
n_layer = 5
n_head = 6
n_embd = 384
block_size = 256
batch_size = 8
dropout = 0.0
