# The CPU quickstart (scripts/quickstart.sh): a ~1M-parameter model on one language of the bundled demo corpus.
# The demo corpus is ~25k tokens, so the model overfits within a few hundred steps: evaluate often, keep the
# best checkpoint, and stop once validation loss has not improved for 3 evaluations.
recipe = "modern"
n_layer = 4
n_head = 4
n_embd = 128
block_size = 256
batch_size = 16
dropout = 0.0  # attention-probability dropout costs ~2x on CPU; early stopping regularises instead
weight_decay = 0.1
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 30
max_iters = 300
eval_interval = 25
eval_iters = 10
early_stop_patience = 3
