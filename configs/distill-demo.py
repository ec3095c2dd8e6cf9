# Distillation on the demo corpus: a nano-size student (the shape of configs/nano.py) learns from a teacher trained
# on the same dataset, e.g. the quickstart's model:
#   bash scripts/quickstart.sh hindi
#   python training-inference/distill.py configs/distill-demo.py --teacher=out/demo-hindi --out_dir=out/demo-hindi-student
recipe = "modern"
n_layer = 4
n_head = 4
n_embd = 64
block_size = 128
batch_size = 16
learning_rate = 2e-3
min_lr = 2e-4
max_iters = 300
warmup_iters = 30
eval_interval = 25
eval_iters = 10
early_stop_patience = 3
dropout = 0.0
# half the loss from the teacher's softened distribution, half from the data
alpha = 0.5
temperature = 2.0
