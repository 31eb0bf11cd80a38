import pytest
import torch

from yolo9000.data import transforms as T
from yolo9000.geometry import (
    GeometryError,
    letterbox_boxes,
    letterbox_offset,
    letterbox_size,
    unletterbox_boxes,
)
from yolo9000.postprocess import to_image_pixels


def darknet_letterbox(height: int, width: int, net: int) -> tuple[int, int, int, int]:
    """darknet's letterbox_image in C arithmetic: (new_h, new_w, top, left)."""
    if net / width < net / height:
        new_w, new_h = net, (height * net) // width
    else:
        new_w, new_h = (width * net) // height, net
    return new_h, new_w, (net - new_h) // 2, (net - new_w) // 2


def test_letterbox_size_and_offset_follow_darknets_integer_rule():
    sizes = [(h, w) for h in range(100, 1001, 37) for w in range(100, 1001, 41)]
    expected = torch.tensor([darknet_letterbox(h, w, 416) for h, w in sizes])
    assert torch.equal(letterbox_size(sizes, 416), expected[:, :2])
    assert torch.equal(letterbox_offset(sizes, 416), expected[:, 2:])


def test_letterbox_floors_where_rounding_would_differ():
    new_h, new_w = letterbox_size((500, 335), 416).tolist()  # 335 · 416 / 500 = 278.72
    assert (new_h, new_w) == (416, 278)
    image = torch.full((3, 500, 335), 255, dtype=torch.uint8)
    boxed = T.letterbox_image(image, 416)
    content = (boxed[0] == 255).any(0).nonzero().reshape(-1)
    assert len(content) == 278 and int(content[0]) == (416 - 278) // 2


@pytest.mark.parametrize("image_size", [(480, 640), (500, 333), (416, 416), (97, 1001), (101, 57)])
def test_letterbox_then_unletterbox_is_the_identity(image_size):
    h, w = image_size
    original = torch.tensor([[0.1 * w, 0.2 * h, 0.7 * w, 0.9 * h], [0, 0, w, h]], dtype=torch.float64)
    back = unletterbox_boxes(letterbox_boxes(original, image_size, 416), image_size, 416)
    torch.testing.assert_close(back, original)


def test_a_box_drawn_on_a_non_square_image_maps_back_to_where_it_was_drawn():
    height, width, net = 170, 300, 128
    drawn = [60, 40, 210, 130]  # x0 y0 x1 y1, pixels [x0, x1) x [y0, y1)
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    image[:, drawn[1] : drawn[3], drawn[0] : drawn[2]] = 255
    target = {"boxes": torch.tensor([drawn], dtype=torch.float32)}
    boxed, moved = T.Letterbox(net)(image, target)
    rows = (boxed[0] > 191).any(1).nonzero().reshape(-1)
    cols = (boxed[0] > 191).any(0).nonzero().reshape(-1)
    seen = torch.tensor([[cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]], dtype=torch.float32)
    torch.testing.assert_close(moved["boxes"], seen, atol=1.0, rtol=0)  # the box moved with the image
    back = to_image_pixels(seen[None] / net, torch.tensor([[height, width]]), net)[0, 0]
    assert (back - torch.tensor(drawn, dtype=torch.float32)).abs().max() <= width / net  # within one network pixel
    grey_rows = (boxed[0] == T.GREY).all(1)
    top = int(letterbox_offset((height, width), net)[0])
    assert grey_rows[:top].all() and not grey_rows[top]  # the bars are exactly the offset geometry.py gives


def test_unletterboxed_boxes_are_clipped_to_their_own_image():
    outside = torch.tensor([[[-30.0, -10.0, 500.0, 450.0]], [[-30.0, -10.0, 500.0, 450.0]]])
    clipped = unletterbox_boxes(outside, torch.tensor([[480, 640], [300, 200]]), 416)
    assert clipped[0, 0].tolist() == [0, 0, 640, 480] and clipped[1, 0].tolist() == [0, 0, 200, 300]


def test_bad_sizes_are_refused_with_what_was_given():
    with pytest.raises(GeometryError, match="positive"):
        letterbox_size([[0, 10]], 416)
    with pytest.raises(GeometryError, match="height, width"):
        letterbox_size([1, 2, 3], 416)
