"""`race`: run one action on many threads released at the same moment, for the tests that
check what a store or the server does when writers collide."""

import threading


def race(threads: int, action) -> tuple[list, list[BaseException]]:
    """Run `action(index)` on `threads` threads that start together; (results, errors)."""
    start_together = threading.Barrier(threads)
    results, errors = [], []

    def run(index):
        start_together.wait()
        try:
            results.append(action(index))
        except BaseException as error:  # returned, so the test can say what it expected
            errors.append(error)

    workers = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results, errors
