import pytest
import torch
import torch.nn.functional as F

from yolo9000.model.layers import ConvBNLeaky, MaxPoolStride1, Reorg, build_layers


def darknet_reorg_reference(x: torch.Tensor, stride: int) -> torch.Tensor:
    """darknet's reorg layer forward, transcribed loop for loop from reorg_cpu(input dims, forward=0)."""
    batch, c, h, w = x.shape
    flat_in = x.reshape(-1).tolist()
    flat_out = [0.0] * len(flat_in)
    out_c = c // (stride * stride)
    for b in range(batch):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    in_index = i + w * (j + h * (k + c * b))
                    c2 = k % out_c
                    offset = k // out_c
                    w2 = i * stride + offset % stride
                    h2 = j * stride + offset // stride
                    out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
                    flat_out[in_index] = flat_in[out_index]  # forward=0: out[in_index] = x[out_index]
    return torch.tensor(flat_out, dtype=x.dtype).reshape(batch, c * stride * stride, h // stride, w // stride)


def space_to_depth(x: torch.Tensor, s: int) -> torch.Tensor:
    """TensorFlow's space_to_depth in NCHW: output channel (dy * s + dx) * C + c."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // s, s, w // s, s).permute(0, 3, 5, 1, 2, 4).reshape(b, c * s * s, h // s, w // s)


def test_reorg_matches_the_darknet_notes_test_vector():
    out = Reorg(stride=2)(torch.arange(64.0).reshape(1, 4, 4, 4))
    assert out.shape == (1, 16, 2, 2)
    expected = [0, 16, 32, 48, 1, 17, 33, 49, 8, 24, 40, 56, 9, 25, 41, 57]
    assert out[0, :, 0, 0].tolist() == expected


def test_reorg_equals_darknets_loop_on_a_batch_of_non_square_inputs():
    x = torch.randn(2, 8, 4, 6)
    assert torch.equal(Reorg(2)(x), darknet_reorg_reference(x, 2))
    x3 = torch.randn(1, 18, 6, 3)
    assert torch.equal(Reorg(3)(x3), darknet_reorg_reference(x3, 3))


def test_reorg_is_neither_pixel_unshuffle_nor_space_to_depth():
    x = torch.arange(64.0).reshape(1, 4, 4, 4)
    out = Reorg(2)(x)
    for other in (F.pixel_unshuffle(x, 2), space_to_depth(x, 2)):
        assert other.shape == out.shape
        assert not torch.equal(out, other)


def test_reorg_keeps_every_value_once():
    x = torch.arange(2 * 512 * 4 * 4.0).reshape(2, 512, 4, 4)
    out = Reorg(2)(x)
    assert out.shape == (2, 2048, 2, 2)
    assert torch.equal(out.flatten().sort().values, x.flatten())


def test_reorg_rejects_sizes_it_cannot_divide():
    with pytest.raises(ValueError, match="divisible"):
        Reorg(2)(torch.zeros(1, 4, 5, 4))


def test_conv_bn_leaky_is_conv_without_bias_then_darknet_bn_then_leaky_point_one():
    block = ConvBNLeaky(3, 8, 3)
    assert block.conv.bias is None and block.conv.padding == (1, 1)
    assert block.bn.eps == 1e-5 and block.bn.momentum == 0.01
    assert ConvBNLeaky(3, 8, 1).conv.padding == (0, 0)
    with torch.no_grad():
        block.bn.running_mean.uniform_(-1, 1)
        block.bn.running_var.uniform_(0.5, 2)
        block.bn.weight.uniform_(0.5, 2)
        block.bn.bias.uniform_(-1, 1)
    block.eval()
    x = torch.randn(2, 3, 7, 5)
    y = F.conv2d(x, block.conv.weight, padding=1)
    bn = block.bn
    y = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + 1e-5)
    y = y * bn.weight[:, None, None] + bn.bias[:, None, None]
    y = torch.where(y > 0, y, 0.1 * y)
    out = block(x)
    assert out.shape == (2, 8, 7, 5)
    torch.testing.assert_close(out, y)


def test_conv_bn_leaky_running_stats_move_one_percent_per_batch():
    block = ConvBNLeaky(1, 1, 1)
    with torch.no_grad():
        block.conv.weight.fill_(1.0)
    block(torch.full((1, 1, 2, 2), 10.0))
    assert block.bn.running_mean.item() == pytest.approx(0.99 * 0 + 0.01 * 10)


def test_stride_one_maxpool_keeps_size_and_skips_outside_cells_like_darknet():
    x = torch.randn(2, 3, 13, 13)
    out = MaxPoolStride1()(x)
    assert out.shape == x.shape
    # darknet: window [j, j+1] x [i, i+1], cells past the edge skipped.
    expected = torch.empty_like(x)
    for j in range(13):
        for i in range(13):
            expected[:, :, j, i] = x[:, :, j : j + 2, i : i + 2].amax(dim=(2, 3))
    assert torch.equal(out, expected)


def test_build_layers_counts_channels_and_rejects_unknown_specs():
    layers, channels = build_layers([(16, 3), "M", (32, 1), "M1"], 3)
    assert channels == 32 and len(layers) == 4
    assert layers(torch.zeros(1, 3, 8, 8)).shape == (1, 32, 4, 4)
    with pytest.raises(ValueError, match="unknown layer spec"):
        build_layers([(16, 3), "avg"], 3)
