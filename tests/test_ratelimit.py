"""Tests for web/ratelimit.py: token buckets, the per-client limiter, and parsing its settings.

Time is a FakeClock that tests move by hand; nothing here sleeps. Rates and steps are
chosen to be exact in binary floating point, so token counts can be compared with ==.
"""

import sys
import threading

import pytest

from tests.support.clock import FakeClock
from web.ratelimit import RateLimiter, TokenBucket, parse_rate, refill, retry_after_header, spend



@pytest.fixture
def frequent_thread_switches():
    """Make the interpreter switch threads every microsecond instead of every 5 ms.

    With the default interval a thread can finish its whole loop before another one
    runs, and a missing lock would go unnoticed. No test can prove a race absent, but
    this makes one far more likely to show.
    """
    default_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(default_interval)


def run_in_threads(thread_count: int, work) -> list:
    """Run work(thread_index) in thread_count threads started together; return their results.

    An exception in any thread is raised again here, so it fails the test.
    """
    start_together = threading.Barrier(thread_count)
    results = [None] * thread_count
    errors = []

    def run(index: int) -> None:
        start_together.wait()
        try:
            results[index] = work(index)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(thread_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def drain(bucket: TokenBucket) -> None:
    while bucket.take() == 0.0:
        pass


# --- TokenBucket -----------------------------------------------------------------


def test_full_bucket_allows_exactly_capacity_takes_then_refuses():
    bucket = TokenBucket(rate=1.0, capacity=5, clock=FakeClock())
    assert [bucket.take() for _ in range(5)] == [0.0] * 5
    assert bucket.take() > 0


def test_refused_take_takes_nothing():
    bucket = TokenBucket(rate=1.0, capacity=2, clock=FakeClock())
    assert bucket.take(1) == 0.0
    assert bucket.take(2) == 1.0  # one token short, at one token a second
    assert bucket.take(1) == 0.0  # the refused take left the last token in place


def test_half_a_period_refills_half_the_tokens():
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, capacity=8, clock=clock)  # empty to full in 4 s
    drain(bucket)
    clock.advance(2.0)
    assert [bucket.take() for _ in range(4)] == [0.0] * 4
    assert bucket.take() > 0


def test_long_idle_never_fills_past_capacity():
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, capacity=3, clock=clock)
    drain(bucket)
    clock.advance(1e9)
    assert [bucket.take() for _ in range(3)] == [0.0] * 3
    assert bucket.take() > 0


@pytest.mark.parametrize(
    "rate, capacity, tokens, expected_wait",
    [
        (2.0, 1, 1.0, 0.5),     # the example: 2 tokens/s, empty, one token → 0.5 s
        (0.25, 1, 1.0, 4.0),    # a slow rate: one token every 4 s
        (4.0, 3, 3.0, 0.75),    # taking several tokens at once waits for all of them
        (1.0, 2, 0.5, 0.5),     # fractional takes
    ],
)
def test_wait_is_exact_and_taking_after_it_succeeds(rate, capacity, tokens, expected_wait):
    clock = FakeClock()
    bucket = TokenBucket(rate=rate, capacity=capacity, clock=clock)
    drain(bucket)
    wait = bucket.take(tokens)
    assert wait == expected_wait
    clock.advance(wait)
    assert bucket.take(tokens) == 0.0


def test_wait_shrinks_as_time_passes():
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, capacity=1, clock=clock)
    drain(bucket)
    clock.advance(0.25)
    assert bucket.take() == 0.75


def test_clock_going_backwards_adds_no_tokens():
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, capacity=2, clock=clock)
    drain(bucket)
    clock.advance(-100.0)
    assert bucket.take() == 1.0
    # Back to where it was: the interval it has now covered twice pays nothing.
    clock.advance(100.0)
    assert bucket.take() == 1.0
    # Only time past the latest reading refills.
    clock.advance(1.0)
    assert bucket.take() == 0.0


@pytest.mark.parametrize(
    "rate, capacity",
    [(0, 1), (-1, 1), (float("nan"), 1), (float("inf"), 1), (1, 0), (1, -5), (1, float("nan"))],
)
def test_bucket_refuses_non_positive_or_non_finite_settings(rate, capacity):
    with pytest.raises(ValueError):
        TokenBucket(rate=rate, capacity=capacity, clock=FakeClock())


@pytest.mark.parametrize("tokens", [0, -1, float("nan"), 3.5])
def test_take_refuses_non_positive_amounts_or_more_than_capacity(tokens):
    bucket = TokenBucket(rate=1.0, capacity=3, clock=FakeClock())
    with pytest.raises(ValueError):
        bucket.take(tokens)


def test_concurrent_takes_on_a_frozen_clock_succeed_exactly_capacity_times(frequent_thread_switches):
    # Half the 16 000 attempts can succeed, so threads contend for tokens the whole time.
    bucket = TokenBucket(rate=1.0, capacity=8000, clock=FakeClock())

    def take_many(_index: int) -> int:
        return sum(bucket.take() == 0.0 for _ in range(1000))

    successes = run_in_threads(16, take_many)
    assert sum(successes) == 8000


def test_concurrent_takes_on_an_advancing_clock_spend_exactly_the_refilled_tokens(frequent_thread_switches):
    # Each thread repeats: advance the clock 0.5 s (half a token), then take one token.
    # The bucket is drained first, and its capacity (10) exceeds the most tokens that can
    # be waiting at once (1 + 16 threads × 0.5), so the capacity never clips a refill.
    # Every refilled token is then spent, whatever the interleaving: successes equal
    # capacity_left + rate × elapsed = 0 + 1.0 × (16 × 1000 × 0.5) exactly.
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, capacity=10, clock=clock)
    drain(bucket)
    started = clock()

    def advance_and_take(_index: int) -> int:
        successes = 0
        for _ in range(1000):
            clock.advance(0.5)
            successes += bucket.take() == 0.0
        return successes

    successes = sum(run_in_threads(16, advance_and_take))
    elapsed = clock() - started
    assert elapsed == 8000.0
    assert successes == 1.0 * elapsed


# --- RateLimiter -----------------------------------------------------------------


def test_limiter_keeps_clients_separate():
    limiter = RateLimiter(2, 60, clock=FakeClock())
    assert [limiter.check("10.0.0.1") for _ in range(2)] == [0.0, 0.0]
    assert limiter.check("10.0.0.1") > 0
    assert [limiter.check("10.0.0.2") for _ in range(2)] == [0.0, 0.0]


def test_limiter_refills_at_requests_per_period():
    clock = FakeClock()
    limiter = RateLimiter(10, 60, clock=clock)
    assert [limiter.check("client") for _ in range(10)] == [0.0] * 10
    assert limiter.check("client") == 6.0  # one request every 60 / 10 seconds
    clock.advance(30)
    assert [limiter.check("client") for _ in range(5)] == [0.0] * 5
    assert limiter.check("client") > 0


@pytest.mark.parametrize(
    "requests, per_seconds, max_clients",
    [(0, 60, 10), (10, 0, 10), (10, -1, 10), (10, 60, 0)],
)
def test_limiter_refuses_non_positive_settings(requests, per_seconds, max_clients):
    with pytest.raises(ValueError):
        RateLimiter(requests, per_seconds, clock=FakeClock(), max_clients=max_clients)


def test_concurrent_checks_on_many_keys_allow_exactly_requests_per_key(frequent_thread_switches):
    # Half of the 16 × 100 checks per key can succeed, so threads contend throughout.
    limiter = RateLimiter(800, 60, clock=FakeClock())
    keys = [f"10.0.0.{n}" for n in range(8)]

    def check_every_key(_index: int) -> dict[str, int]:
        allowed = dict.fromkeys(keys, 0)
        for _ in range(100):
            for key in keys:
                allowed[key] += limiter.check(key) == 0.0
        return allowed

    per_thread = run_in_threads(16, check_every_key)
    for key in keys:
        assert sum(allowed[key] for allowed in per_thread) == 800


def test_concurrent_new_clients_stay_within_max_clients(frequent_thread_switches):
    limiter = RateLimiter(5, 60, clock=FakeClock(), max_clients=100)

    def check_new_keys(index: int) -> bool:
        # Every key is new, so its bucket starts full and its first check is allowed.
        return all(limiter.check(f"{index}:{n}") == 0.0 for n in range(1000))

    assert all(run_in_threads(16, check_new_keys))
    assert len(limiter) == 100


def test_tracked_clients_never_exceed_max_clients():
    limiter = RateLimiter(5, 60, clock=FakeClock(), max_clients=10)
    for n in range(1000):
        limiter.check(f"client-{n}")
        assert len(limiter) <= 10


def test_full_buckets_are_forgotten_before_busy_ones():
    clock = FakeClock()
    limiter = RateLimiter(2, 10, clock=clock, max_clients=3)  # a token every 5 s
    limiter.check("busy")
    limiter.check("busy")             # empty: full again 10 s from now
    clock.advance(1)
    limiter.check("idle-1")           # one token short: full again in 5 s
    limiter.check("idle-2")
    clock.advance(5)                  # the idle ones are full; "busy" has 1.2 tokens
    limiter.check("newcomer")
    # "busy" was the least recently used, yet the full buckets went instead.
    assert len(limiter) == 2
    assert limiter.check("busy") == 0.0
    assert limiter.check("busy") > 0


def test_least_recently_used_client_goes_when_none_is_full():
    limiter = RateLimiter(2, 60, clock=FakeClock(), max_clients=2)  # the clock never moves
    limiter.check("arrived-first")
    limiter.check("arrived-second")
    limiter.check("arrived-second")   # empty
    limiter.check("arrived-first")    # empty, and now the more recently used
    limiter.check("newcomer")
    assert limiter.check("arrived-first") > 0       # still remembered: still empty
    assert limiter.check("arrived-second") == 0.0   # forgotten: a new bucket starts full


def test_forgotten_client_starts_with_a_full_bucket():
    limiter = RateLimiter(3, 60, clock=FakeClock(), max_clients=1)
    assert [limiter.check("a") for _ in range(3)] == [0.0] * 3
    assert limiter.check("a") > 0
    limiter.check("b")                # pushes "a" out
    assert [limiter.check("a") for _ in range(3)] == [0.0] * 3
    assert limiter.check("a") > 0


# --- parse_rate and retry_after_header --------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("120/60", (120, 60.0)),
        ("10/60", (10, 60.0)),
        ("1/1", (1, 1.0)),
        ("5/0.5", (5, 0.5)),
        ("0", None),
    ],
)
def test_parse_rate_accepts_requests_per_seconds_or_zero(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "5/",
        "/5",
        "1/0",
        "0/60",
        "-1/60",
        "10/-60",
        "1.5/60",
        "١٢/60",         # Arabic-Indic digits: int() would accept them
        "12/٦٠",
        "1_000/60",      # int() accepts underscores
        "+5/60",
        "1e3/60",
        "10/1e3",
        "10/inf",
        "10/nan",
        "12 /60",
        " 12/60",
        "12/60\n",
        "120/60/2",
        "00",
        "1/" + "9" * 400,  # overflows to an infinite period
    ],
)
def test_parse_rate_refuses_anything_else(text):
    with pytest.raises(ValueError, match="rate limit"):
        parse_rate(text)


@pytest.mark.parametrize(
    "seconds, header",
    [(0.0, "1"), (0.01, "1"), (0.5, "1"), (1.0, "1"), (1.2, "2"), (6.0, "6"), (59.0001, "60")],
)
def test_retry_after_rounds_up_to_whole_seconds_at_least_one(seconds, header):
    assert retry_after_header(seconds) == header


def test_refill_adds_rate_times_elapsed_up_to_the_capacity_and_never_for_a_clock_going_back():
    assert refill(1.0, 10.0, 12.0, rate=0.5, capacity=5.0) == (2.0, 12.0)
    assert refill(4.5, 10.0, 20.0, rate=0.5, capacity=5.0) == (5.0, 20.0)
    assert refill(1.0, 10.0, 7.0, rate=0.5, capacity=5.0) == (1.0, 10.0)  # back in time: nothing, time kept


def test_spend_takes_what_is_there_or_says_how_long_until_it_would_be():
    assert spend(3.0, 1, rate=2.0) == (2.0, 0.0)
    assert spend(0.5, 1, rate=2.0) == (0.5, 0.25)
