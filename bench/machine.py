"""The machine a benchmark ran on, from /proc and the file system: numbers mean little without
it (cores, CPU model, memory, the disk and file system the spool lives on, and how busy the
machine already was)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import confluent_kafka


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _mem_total_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def _mount_of(path: Path) -> tuple[str, str, str, str]:
    """(device, mount point, fs type, options) of the mount that holds ``path``."""
    path = path.resolve()
    best = ("?", "/", "?", "")
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype, opts, *_ = line.split()
            mnt = mnt.replace("\\040", " ")
            if (path == Path(mnt) or Path(mnt) in path.parents) and len(mnt) >= len(best[1]):
                best = (dev, mnt, fstype, opts)
    return best


def _disk(dev: str) -> str:
    """Kind of the block device behind ``dev`` (rotational flag, model) when /sys tells."""
    name = os.path.basename(os.path.realpath(dev))
    base = Path("/sys/class/block") / name
    if not base.exists():
        return ""
    queue = base / "queue"
    if not queue.exists():  # a partition: its disk holds the queue
        queue = base.resolve().parent / "queue"
    parts = []
    rot = queue / "rotational"
    if rot.exists():
        parts.append("rotational" if rot.read_text().strip() == "1" else "non-rotational")
    model = base.resolve().parent / "device" / "model"
    if not model.exists():
        model = base / "device" / "model"
    if model.exists() and model.read_text().strip():
        parts.append(model.read_text().strip())
    if name.startswith("vd"):
        parts.append("virtio")
    return ", ".join(parts)


def describe(workdir: Path) -> list[str]:
    """Lines describing this machine and the file system under ``workdir``."""
    dev, mnt, fstype, opts = _mount_of(workdir)
    st = os.statvfs(workdir)
    free_gib = st.f_bavail * st.f_frsize / 2**30
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    disk = _disk(dev)
    return [
        f"CPU: {os.cpu_count()} cores, {_cpu_model()}; memory {_mem_total_gib():.1f} GiB",
        f"kernel {platform.release()}; Python {sys.version.split()[0]}; "
        f"librdkafka {confluent_kafka.libversion()[0]}",
        f"spool file system: {fstype} on {dev}{f' ({disk})' if disk else ''} at {mnt}, "
        f"options {opts}; {free_gib:.0f} GiB free",
        f"load average before the run: {load}",
    ]
