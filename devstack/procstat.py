"""What a running process has used, read from /proc (Linux): for the benchmarks."""

from __future__ import annotations

import os


def proc_cpu_s(pid: int) -> float:
    """User plus system CPU seconds the process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()  # the name in () may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_memory_mib(pid: int, field: str = "VmHWM") -> float:
    """A memory figure of /proc/<pid>/status in MiB: VmHWM (peak resident) or VmRSS (now)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise ValueError(f"no {field} in /proc/{pid}/status")
