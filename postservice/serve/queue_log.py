"""waitress's queue warnings, counted one by one and logged once an interval."""

import logging
import threading
import time

# waitress logs "Task queue depth is N" for every request that finds no idle
# worker thread: under steady load that is most requests (a flood of lines
# at many connections), and even with as many connections as threads a
# thread that has just answered is not idle yet. One line per interval says
# the same; the metrics count every such request.
QUEUE_LOG_INTERVAL = 60.0


class QueueLog(logging.Filter):
    """A filter on waitress's ``waitress.queue`` logger: counts every queued
    request, lets one line through per ``interval``.

    waitress logs with its queue's lock held, so the counts here need no
    lock of their own. The line says how deep the queue is, how many
    requests waited since the last line, and the deepest it got; those of a
    burst after the last line are told by the next one, and by the metrics
    at once. waitress counts a task: one request, or the requests a client
    pipelined on its connection.
    """

    def __init__(self, interval=QUEUE_LOG_INTERVAL, clock=time.monotonic):
        super().__init__()
        self.interval = interval
        self.clock = clock
        self.queued = 0  # requests that found every thread busy, all told
        self.unlogged = 0  # of them, since the last line
        self.deepest = 0  # the deepest queue since the last line
        self.quiet_until = None

    def restart(self):
        """A new server's first queued request is logged at once."""
        self.quiet_until = None
        self.unlogged = self.deepest = 0

    def filter(self, record):
        # waitress's call: warning("Task queue depth is %d", depth).
        depth = record.args[0] if record.args else 0
        self.queued += 1
        self.unlogged += 1
        self.deepest = max(self.deepest, depth)
        now = self.clock()
        if self.quiet_until is not None and now < self.quiet_until:
            return False
        self.quiet_until = now + self.interval
        record.msg = (
            "Task queue depth is %d: %d request(s) waited for a worker thread "
            "since the last such line, at most %d deep"
        )
        record.args = (depth, self.unlogged, self.deepest)
        self.unlogged = self.deepest = 0
        return True


_install_lock = threading.Lock()


def installed(logger_name="waitress.queue"):
    """The process's one ``QueueLog``, on waitress's queue logger.

    One per process, not one per server: filters on a logger run in turn
    and the first to refuse a line stops the rest, so a second one would
    miss what the first kept quiet. A server counts from its start
    (``restart``).
    """
    logger = logging.getLogger(logger_name)
    with _install_lock:
        for existing in logger.filters:
            if isinstance(existing, QueueLog):
                return existing
        queue_log = QueueLog()
        logger.addFilter(queue_log)
        return queue_log
