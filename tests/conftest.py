"""Test-session settings shared by every test file."""
# The tests' models are tiny: one intra-op thread beats two, which only spin against each other
# (and against the other test processes) on a 2-core machine.
import torch

torch.set_num_threads(1)
