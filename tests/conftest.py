"""Make the stage folders importable in tests, the same way the scripts see them when run directly."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for sub in ("training-inference", "prompting", "scripts"):
    path = os.path.join(ROOT, sub)
    if path not in sys.path:
        sys.path.insert(0, path)

# The tests' models are tiny: one intra-op thread beats two, which only spin against each other
# (and against the other test processes) on a 2-core machine.
import torch  # noqa: E402

torch.set_num_threads(1)
