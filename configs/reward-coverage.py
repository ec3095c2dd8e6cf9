# Reward fine-tuning for the prompt's required words: each demo record names a noun, a verb and an adjective; the
# reward is the share of them the story uses (inflected forms count), plus a length band so that the model does not
# learn to stop early or ramble.
#   python training-inference/finetune_reward.py configs/reward-coverage.py --init_from=out/demo-hindi
reward = "coverage+length_band"
length_min = 20                # words of the completion
length_max = 60
language = "hindi"
prompts = "data/demo/hindi.jsonl.gz"
prompt_field = "story"
prompt_words = 8
batch_size = 16
max_new_tokens = 96
kl_coef = 0.1
baseline = "running"
learning_rate = 1e-4
max_iters = 300
eval_interval = 25
