"""BoundedQueue: the three full-queue policies, end of stream, errors, abandon, wakeup.

Every wait has a timeout, so a broken queue fails these tests instead of hanging them.
"""
from __future__ import annotations

import threading

import pytest

from streamfuse.queues import BoundedQueue, Closed, EndOfStream

WAIT = 2.0         # s: the most a test waits for something that should happen at once
PAUSE = 0.1        # s: how long a test watches for something that must not happen
# s: a blocked put's own timeout; far longer than WAIT, so that a put which only returns
# when its timeout expires (nobody woke it) is caught, and no test can hang for ever.
PUT_TIMEOUT = 30.0


def drain(q: BoundedQueue) -> list:
    """Every item left, up to the end of the stream (which must be there)."""
    items = []
    while True:
        try:
            item = q.get(timeout=WAIT)
        except EndOfStream:
            return items
        assert item is not None, "get timed out on a closed queue"
        items.append(item)


def start(target) -> tuple[threading.Thread, dict]:
    """Run `target()` on a daemon thread; the result or the exception lands in the dict."""
    out = {"done": threading.Event()}

    def body():
        try:
            out["result"] = target()
        except BaseException as exc:  # handed to the test thread to assert on
            out["error"] = exc
        finally:
            out["done"].set()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, out


def test_block_policy_makes_the_producer_wait_for_the_consumer():
    q = BoundedQueue(2, "block")
    assert q.put("a") and q.put("b")
    thread, out = start(lambda: q.put("c", timeout=PUT_TIMEOUT))
    assert not out["done"].wait(PAUSE), "put returned while the queue was full"
    assert len(q) == 2
    assert q.get(timeout=WAIT) == "a"
    assert out["done"].wait(WAIT), "put did not return after the consumer took an item"
    thread.join(WAIT)
    assert out.get("result") is True and "error" not in out
    assert q.dropped == 0
    q.close()
    assert drain(q) == ["b", "c"]


def test_block_policy_put_times_out_and_returns_false():
    q = BoundedQueue(1, "block")
    q.put(1)
    assert q.put(2, timeout=0.05) is False
    q.close()
    assert drain(q) == [1]


def test_drop_oldest_keeps_the_newest_items_in_order():
    q = BoundedQueue(3, "drop_oldest")
    assert all(q.put(i) for i in range(10))   # an accepted item is reported as such
    assert q.dropped == 7
    q.close()
    assert drain(q) == [7, 8, 9]


def test_drop_oldest_with_capacity_one_is_a_latest_value_slot():
    q = BoundedQueue(1, "drop_oldest")
    for i in range(5):
        q.put(i)
    assert q.get(timeout=WAIT) == 4
    assert q.get(timeout=0.01) is None   # nothing left: times out
    assert q.dropped == 4


def test_drop_newest_keeps_the_first_items_and_counts_the_rest():
    q = BoundedQueue(3, "drop_newest")
    accepted = [q.put(i) for i in range(10)]
    assert accepted == [True] * 3 + [False] * 7
    assert q.dropped == 7
    assert q.get(timeout=WAIT) == 0
    assert q.put(10) is True             # room again after a get
    q.close()
    assert drain(q) == [1, 2, 10]


def test_close_delivers_the_remaining_items_then_end_of_stream():
    q = BoundedQueue(4, "block")
    q.put("x")
    q.put("y")
    q.close()
    assert q.get(timeout=WAIT) == "x"
    assert q.get(timeout=WAIT) == "y"
    for _ in range(2):   # and keeps saying so
        with pytest.raises(EndOfStream):
            q.get(timeout=WAIT)


def test_close_wakes_a_consumer_waiting_on_an_empty_queue():
    q = BoundedQueue(2, "block")
    thread, out = start(lambda: q.get(timeout=PUT_TIMEOUT))
    assert not out["done"].wait(PAUSE)
    q.close()
    assert out["done"].wait(WAIT)
    assert isinstance(out.get("error"), EndOfStream)


def test_fail_delivers_the_remaining_items_then_reraises_in_the_consumer():
    q = BoundedQueue(4, "block")
    boom = OSError("disk full")
    q.put(1)
    q.put(2)
    taken = []

    def consumer():
        while True:
            taken.append(q.get(timeout=PUT_TIMEOUT))

    thread, out = start(consumer)
    assert not out["done"].wait(PAUSE)   # took both items, now waiting for more
    assert taken == [1, 2]
    q.fail(boom)
    assert out["done"].wait(WAIT), "fail did not wake the waiting consumer"
    thread.join(WAIT)
    assert out.get("error") is boom      # the producer's own exception, in the consumer thread
    assert taken == [1, 2]


def test_fail_after_items_reraises_on_every_later_get():
    q = BoundedQueue(4, "drop_newest")
    q.put("x")
    q.fail(ValueError("bad frame"))
    assert q.get(timeout=WAIT) == "x"
    for _ in range(2):
        with pytest.raises(ValueError, match="bad frame"):
            q.get(timeout=WAIT)


def test_get_on_an_empty_open_queue_times_out_with_none():
    q = BoundedQueue(1, "drop_newest")
    assert q.get(timeout=0.01) is None


def test_abandon_makes_a_blocked_put_raise_closed():
    q = BoundedQueue(1, "block")
    q.put("a")
    thread, out = start(lambda: q.put("b", timeout=PUT_TIMEOUT))
    assert not out["done"].wait(PAUSE)
    q.abandon()
    assert out["done"].wait(WAIT), "abandon did not wake the blocked producer"
    thread.join(WAIT)
    assert isinstance(out.get("error"), Closed)
    with pytest.raises(Closed):   # and every later put
        q.put("c")
    assert len(q) == 0


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_abandon_makes_put_raise_closed_for_every_policy(policy):
    q = BoundedQueue(2, policy)
    q.abandon()
    with pytest.raises(Closed):
        q.put(1)


def test_wakeup_event_is_set_by_put_close_and_fail():
    wake = threading.Event()
    q = BoundedQueue(2, "drop_oldest", wakeup=wake)
    assert not wake.is_set()
    q.put(1)
    assert wake.is_set()
    wake.clear()
    q.get(timeout=WAIT)
    assert not wake.is_set()   # taking an item is not news for the consumer
    q.close()
    assert wake.is_set()

    wake2 = threading.Event()
    q2 = BoundedQueue(1, "block", wakeup=wake2)
    q2.fail(RuntimeError("x"))
    assert wake2.is_set()


def test_wakeup_lets_one_consumer_wait_on_two_queues():
    wake = threading.Event()
    a = BoundedQueue(1, "drop_oldest", wakeup=wake)
    b = BoundedQueue(1, "drop_oldest", wakeup=wake)
    thread, _ = start(lambda: b.put("from b"))
    assert wake.wait(WAIT)
    thread.join(WAIT)
    assert a.get(timeout=0.01) is None
    assert b.get(timeout=WAIT) == "from b"


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_below_one_is_rejected(capacity):
    with pytest.raises(ValueError, match="capacity"):
        BoundedQueue(capacity, "block")


@pytest.mark.parametrize("policy", ["drop_and_count", "", "BLOCK", None])
def test_unknown_policy_is_rejected(policy):
    with pytest.raises(ValueError, match="policy"):
        BoundedQueue(4, policy)
