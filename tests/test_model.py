"""The model's fast paths against their written-out references."""
import pytest
import torch
import torch.nn.functional as F

from regional_tinystories.model import (
    GPT,
    ModelConfig,
    QueryKeyProduct,
    RMSNorm,
    RMSNormFunction,
    RotatePairs,
    SwiGLUFunction,
    apply_rope,
    causal_attention_in_row_blocks,
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


def test_compiled_rope_gradient_is_the_rotation_back():
    freqs = rope_frequencies(8, 6, 10000.0).unsqueeze(-3)
    cos, sin = freqs[..., 0], freqs[..., 1]
    for dtype, tolerance in ((torch.float32, 1e-6), (torch.bfloat16, 2 ** -8)):  # bf16: within its rounding
        x = torch.randn(2, 6, 3, 8, dtype=dtype, requires_grad=True)
        upstream = torch.randn(2, 6, 3, 8, dtype=dtype)
        x32 = x.detach().float().requires_grad_()
        (expected,) = torch.autograd.grad(apply_rope(x32, cos, sin), x32, upstream.float())  # autograd's, in fp32
        out = RotatePairs.apply(x, freqs)
        (grad,) = torch.autograd.grad(out, x, upstream)
        assert out.dtype == grad.dtype == dtype
        assert torch.equal(out, apply_rope(x, cos, sin))
        assert torch.allclose(grad.float(), expected, rtol=tolerance, atol=1e-6)


@pytest.mark.parametrize("T", [16, 10])  # 4 row blocks; 10 is not divisible by 4: one block
def test_row_block_attention_equals_sdpa_in_values_and_gradients(T):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, T, 8, requires_grad=True) for _ in range(3))
    upstream = torch.randn(2, 3, T, 8)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    expected_grads = torch.autograd.grad(expected, (q, k, v), upstream)
    out = causal_attention_in_row_blocks(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), upstream)
    assert torch.allclose(out, expected, atol=1e-6)
    for grad, reference in zip(grads, expected_grads):
        assert torch.allclose(grad, reference, atol=1e-5)


def test_query_key_product_runs_in_the_autocast_dtype_and_returns_gradients_in_the_inputs_dtype():
    q, k = torch.randn(2, 5, 8, requires_grad=True), torch.randn(2, 7, 8, requires_grad=True)
    upstream = torch.randn(2, 5, 7)
    with torch.autocast("cpu", torch.bfloat16):
        scores = QueryKeyProduct.apply(q, k)
    assert scores.dtype == torch.bfloat16
    grad_q, grad_k = torch.autograd.grad(scores, (q, k), upstream.bfloat16())
    assert grad_q.dtype == grad_k.dtype == torch.float32
    assert torch.allclose(grad_q, upstream @ k, atol=0.1) and torch.allclose(grad_k, upstream.mT @ q, atol=0.1)


def test_compiled_path_gives_the_same_loss_and_gradients():
    """backend="eager" traces the is_compiling branches (rotate's RotatePairs, attention in row blocks) without
    inductor's code generation: the same maths as the eager path, to float rounding."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=100, block_size=16, n_layer=2, n_head=2, n_embd=16))
    x = torch.randint(0, 100, (2, 16))
    logits, loss = model(x, x)
    assert logits.shape == (2, 16, 100)
    eager_grads = torch.autograd.grad(loss, list(model.parameters()))
    compiled = torch.compile(model, backend="eager")
    no_logits, compiled_loss = compiled(x, x, return_logits=False)
    assert no_logits is None and abs(compiled_loss.item() - loss.item()) < 1e-5
    for grad, reference in zip(torch.autograd.grad(compiled_loss, list(model.parameters())), eager_grads):
        assert torch.allclose(grad, reference, atol=1e-5)


def test_compiled_bf16_autocast_with_qk_norm_trains():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=100, block_size=16, n_layer=1, n_head=2, n_embd=16, qk_norm=True))
    x = torch.randint(0, 100, (2, 16))
    with torch.autocast("cpu", torch.bfloat16):
        _, loss = torch.compile(model, backend="eager")(x, x, return_logits=False)
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


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
