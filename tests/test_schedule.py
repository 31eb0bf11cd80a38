from yolo9000.train.schedule import MULTI_SCALE_SIZES, input_size_at


def test_multi_scale_sizes_are_320_to_608_by_32():
    assert MULTI_SCALE_SIZES == (320, 352, 384, 416, 448, 480, 512, 544, 576, 608)


def test_input_size_is_constant_within_each_block_of_ten_steps():
    for block in range(50):
        sizes = {input_size_at(step, seed=1) for step in range(block * 10, block * 10 + 10)}
        assert len(sizes) == 1


def test_input_size_covers_every_size():
    assert {input_size_at(step, seed=0) for step in range(0, 3000, 10)} == set(MULTI_SCALE_SIZES)


def test_input_size_is_a_pure_function_of_seed_and_block():
    first = [input_size_at(step, seed=3) for step in range(0, 1000, 10)]
    assert first == [input_size_at(step + 9, seed=3) for step in range(0, 1000, 10)]
    assert first != [input_size_at(step, seed=4) for step in range(0, 1000, 10)]


def test_custom_sizes_and_period():
    sizes = {input_size_at(step, seed=0, sizes=(224, 256), every=1) for step in range(100)}
    assert sizes == {224, 256}
