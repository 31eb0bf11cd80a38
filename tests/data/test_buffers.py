import queue

import torch

from yolo9000.data.buffers import LentBuffers, WorkerBuffers


def test_a_buffer_is_reused_only_after_its_id_comes_back():
    returned = queue.Queue()
    buffers = WorkerBuffers(returned)
    first_id, first = buffers.take(64)
    second_id, second = buffers.take(64)
    assert first_id != second_id and first.data_ptr() != second.data_ptr()
    assert first.is_shared() and first.numel() == 64 and first.dtype == torch.uint8
    returned.put(first_id)
    again_id, again = buffers.take(64)
    assert again_id == first_id and again.data_ptr() == first.data_ptr()
    returned.put(second_id)
    larger_id, larger = buffers.take(128)  # larger than any free buffer: a new one
    assert larger_id not in (first_id, second_id) and larger.numel() == 128
    smaller_id, smaller = buffers.take(32)  # fits in the free one: its first 32 bytes
    assert smaller_id == second_id and smaller.numel() == 32 and smaller.data_ptr() == second.data_ptr()


def test_stale_ids_are_ignored_and_at_most_keep_buffers_stay_free():
    returned = queue.Queue()
    earlier = WorkerBuffers(returned)  # a persistent worker's buffers of the previous epoch
    stale = earlier.take(8)[0]
    buffers = WorkerBuffers(returned, keep=1)
    ids = [buffers.take(8)[0] for _ in range(3)]
    assert stale not in ids
    returned.put(stale)
    returned.put((-1, 0))  # not this process's id
    for ident in ids:
        returned.put(ident)
    buffers.collect_returned()
    assert list(buffers.free) == [ids[0]] and not buffers.lent


def test_an_id_goes_back_once_no_tensor_or_view_uses_the_received_images():
    queues = [queue.Queue(), queue.Queue()]
    lent = LentBuffers(queues)
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    lent.hand_back([1, [7, 0]], images)  # as it comes through the DataLoader: lists
    view = images[0]
    del images
    lent.hand_back(None, torch.zeros(0))  # a next batch that is not in a reused buffer
    assert queues[1].empty()  # the view still reads that memory
    del view
    lent.hand_back(None, torch.zeros(0))
    assert queues[1].get_nowait() == (7, 0) and queues[0].empty() and not lent.out
