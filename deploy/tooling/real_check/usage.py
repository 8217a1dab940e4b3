"""The machine's peak memory and CPU while the real check runs, sampled every second."""

from __future__ import annotations

import threading
from pathlib import Path


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def memory_used() -> int:
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info[key] = int(value.split()[0]) * 1024
    return info["MemTotal"] - info["MemAvailable"]


class UsageSampler:
    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop, name="usage", daemon=True)
        self.baseline = memory_used()
        self.peak_memory = self.baseline
        self.peak_cpu = 0.0
        self.first = cpu_times()
        self.last = self.first

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join(5)

    def loop(self) -> None:
        previous = cpu_times()
        while not self.done.wait(self.interval):
            now = cpu_times()
            busy, total = now[0] - previous[0], now[1] - previous[1]
            if total:
                self.peak_cpu = max(self.peak_cpu, busy / total)
            previous = self.last = now
            self.peak_memory = max(self.peak_memory, memory_used())

    def summary(self) -> str:
        busy, total = self.last[0] - self.first[0], self.last[1] - self.first[1]
        mean = busy / total if total else 0.0
        gib = 1024**3
        return (
            f"usage: memory peak {self.peak_memory / gib:.1f} GiB "
            f"({(self.peak_memory - self.baseline) / gib:.1f} GiB over the start); "
            f"CPU mean {mean:.0%}, peak {self.peak_cpu:.0%} of all cores"
        )
