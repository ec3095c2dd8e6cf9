"""The model's fast paths against their written-out references."""
import pytest
import torch
import torch.nn.functional as F

from regional_tinystories.model import (
    GPT,
    ModelConfig,
    RMSNorm,
    RMSNormFunction,
    SwiGLUFunction,
    apply_rope,
    cross_entropy,
    rope_frequencies,
    rope_tables,
    rotate,
)


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


def test_rms_norm_equals_nn_rmsnorm_in_values_and_gradients():
    torch.manual_seed(0)
    for shape in ((4, 16, 48), (2, 8, 3, 16)):  # the residual stream, and QK-norm over heads
        reference = torch.nn.RMSNorm(shape[-1])
        with torch.no_grad():
            reference.weight.normal_()
        fused = RMSNorm(shape[-1])
        fused.load_state_dict(reference.state_dict())
        x, upstream = torch.randn(shape) * 3, torch.randn(shape)
        outputs, grads = [], []
        for norm in (reference, fused):
            leaf = x.clone().requires_grad_()
            out = norm(leaf)
            out.backward(upstream)
            outputs.append(out)
            grads.append((leaf.grad, norm.weight.grad))
        assert torch.allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)
        assert torch.allclose(grads[0][0], grads[1][0], rtol=1e-4, atol=1e-5)
        assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-4)
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, w: RMSNormFunction.apply(a, w, 1e-6), (x, weight))


def test_rms_norm_in_bf16_is_nn_rmsnorm_itself():
    norm = RMSNorm(16).to(torch.bfloat16)
    x = torch.randn(3, 16, dtype=torch.bfloat16)
    assert torch.equal(norm(x), torch.nn.RMSNorm.forward(norm, x))


def test_swiglu_equals_the_written_out_form_exactly():
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        h, upstream = torch.randn(3, 5, 16, dtype=dtype), torch.randn(3, 5, 8, dtype=dtype)
        plain, fused = h.clone().requires_grad_(), h.clone().requires_grad_()
        gate, value = plain.chunk(2, dim=-1)
        expected = F.silu(gate) * value
        expected.backward(upstream)
        out = SwiGLUFunction.apply(fused)
        out.backward(upstream)
        assert out.dtype == dtype and torch.equal(out, expected) and torch.equal(fused.grad, plain.grad)
    h = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(SwiGLUFunction.apply, (h,))


def test_cross_entropy_equals_torch_in_loss_and_gradients_with_ignored_targets():
    torch.manual_seed(0)
    targets = torch.randint(0, 50, (3, 7))
    targets[0, :4] = -1  # a masked prompt (loss_on=story) and a padded row end
    targets[2, -1] = -1
    for dtype in (torch.float32, torch.bfloat16):
        logits = (3 * torch.randn(3, 7, 50)).to(dtype).requires_grad_()
        reference = logits.detach().clone().requires_grad_()
        loss = cross_entropy(logits, targets)
        expected = F.cross_entropy(reference.float().view(-1, 50), targets.view(-1), ignore_index=-1)
        (2.5 * loss).backward()
        (2.5 * expected).backward()
        assert loss.dtype == torch.float32 and torch.allclose(loss, expected, rtol=1e-6)
        assert logits.grad.dtype == dtype and torch.allclose(logits.grad.float(), reference.grad.float(), atol=1e-7)
        assert torch.all(logits.grad[0, :4] == 0)
    assert torch.isnan(cross_entropy(torch.randn(1, 3, 5), torch.full((1, 3), -1)))  # as F.cross_entropy: 0 / 0
    for bad in (-2, 5):  # a target that is neither a token id nor -1 fails, as in F.cross_entropy
        with pytest.raises((RuntimeError, IndexError)):
            cross_entropy(torch.randn(1, 2, 5, requires_grad=True), torch.tensor([[0, bad]]))
