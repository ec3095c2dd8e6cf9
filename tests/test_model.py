"""The model's fast paths against their written-out references."""
import torch

from regional_tinystories.model import GPT, ModelConfig, apply_rope, rope_frequencies, rope_tables, rotate


def test_rotate_equals_the_written_out_rope_for_shared_and_per_row_positions():
    B, T, H, D = 3, 10, 2, 8
    x = torch.randn(B, T, H, D)
    cos, sin = rope_tables(D, 32, 10000.0)
    freqs = rope_frequencies(D, 32, 10000.0)
    expected = apply_rope(x.transpose(1, 2), cos[:T], sin[:T]).transpose(1, 2)
    assert torch.allclose(rotate(x, freqs[:T]), expected, atol=1e-6)
    positions = torch.tensor([[5 + t for t in range(T)], list(range(T)), [20 + t for t in range(T)]])
    per_row = rotate(x, freqs[positions])
    for b in range(B):
        row = apply_rope(x[b:b + 1].transpose(1, 2), cos[positions[b]], sin[positions[b]]).transpose(1, 2)
        assert torch.allclose(per_row[b:b + 1], row, atol=1e-6)


def test_rotate_keeps_the_dtype_and_gradients_flow():
    x = torch.randn(2, 4, 2, 8, dtype=torch.bfloat16, requires_grad=True)
    out = rotate(x, rope_frequencies(8, 4, 10000.0))
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_compiled_path_gives_the_same_loss():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=100, block_size=16, n_layer=1, n_head=2, n_embd=16))
    x = torch.randint(0, 100, (2, 16))
    eager = model(x, x)[1].item()
    compiled = torch.compile(model, backend="eager")  # traces through rotate()'s is_compiling branch
    assert abs(compiled(x, x)[1].item() - eager) < 1e-5
