# Settings for sample.py that read well for small story models: mild nucleus sampling and no 4-gram repeats.
num_samples = 2
max_new_tokens = 300
temperature = 0.8
top_p = 0.95
repetition_penalty = 1.1
no_repeat_ngram_size = 4
