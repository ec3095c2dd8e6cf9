# The seed's TinyStories-Reward experiment on the demo corpus: make a story model use a target word more often,
# with a KL penalty to the starting model keeping its language. --kl_coef=0 shows the collapse the seed reports.
#   python training-inference/finetune_reward.py configs/reward-target-word.py --init_from=out/demo-hindi
reward = "target_words"
target_words = "बिल्ली"        # the seed's "cat"; inflected forms (बिल्लियाँ) count too
language = "hindi"
prompts = "data/demo/hindi.jsonl.gz"
prompt_field = "story"
prompt_words = 8               # each prompt is the first 8 words of a demo story
batch_size = 16
max_new_tokens = 64
kl_coef = 0.2
learning_rate = 1e-4
max_iters = 200
eval_interval = 20
