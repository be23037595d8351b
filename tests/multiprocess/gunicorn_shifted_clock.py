"""gunicorn config for tests: every worker's clock runs TEST_CLOCK_OFFSET_SECONDS ahead of the real one.

For a test that needs the workers inside a KRX session whatever the hour it runs at. Every worker
(and the test process, see test_kis_pacing_gunicorn.py) travels by the same constant offset with
the clock ticking, so wall-clock times agree across processes: the shared pacing slots in Redis
mean the same instant in every worker.
"""

import os
import time


def post_fork(server, worker):
    import time_machine

    offset = float(os.environ["TEST_CLOCK_OFFSET_SECONDS"])
    time_machine.travel(time.time() + offset, tick=True).start()
    time.time()  # time_machine starts ticking at the first read of the clock, not at start()
