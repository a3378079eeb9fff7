"""Prefect's ProcessPoolTaskRunner, made safe to exit after a worker crash.

A worker killed while sending a log message (OOM kill, segfault) leaves half a message in the
pool's message pipe. Prefect 3.8 then cannot stop its forwarding thread and leaves the queue
open, and interpreter exit blocks forever joining the queue's feeder thread: a `pyama process`
that recovered from the crash would never return. Here the queue is abandoned instead; only
log lines of the dead worker are lost. Imported lazily (it imports Prefect).
"""

from __future__ import annotations

from prefect.task_runners import ProcessPoolTaskRunner


class CrashSafeProcessPoolTaskRunner(ProcessPoolTaskRunner):
    def _stop_message_forwarding(self) -> None:
        queue = self._subprocess_message_queue
        super()._stop_message_forwarding()
        if queue is not None and self._subprocess_message_queue is queue:
            queue.cancel_join_thread()  # drop the exit-time join that would hang
            queue.close()
            self._subprocess_message_queue = None
