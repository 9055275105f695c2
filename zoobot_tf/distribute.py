"""Distribution strategies by name, and cluster configuration (TF_CONFIG) helpers.

This is the only module that knows which strategy runs; everything else asks it for the strategy,
the number of replicas and whether this process is the chief (the one that writes files).

Strategies: ``one_device`` (CPU or first GPU), ``mirrored`` (all local GPUs, or ``cpu_replicas``
logical CPUs for testing), ``multi_worker_mirrored`` (several machines, TF_CONFIG), ``tpu``.
"""
from __future__ import annotations

import json
import os
import re
from typing import Sequence

import tensorflow as tf

STRATEGIES = ("one_device", "mirrored", "multi_worker_mirrored", "tpu")


def split_cpu(n: int) -> None:
    """Split the CPU into ``n`` logical devices (to run MirroredStrategy on a machine without GPUs).
    Must be called before TensorFlow initialises its devices."""
    cpus = tf.config.list_physical_devices("CPU")
    configured = tf.config.get_logical_device_configuration(cpus[0])  # (listing logical devices would initialise)
    if configured and len(configured) >= n:
        return
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as e:
        current = tf.config.list_logical_devices("CPU")
        if len(current) >= n:
            return
        raise RuntimeError(f"Cannot split the CPU into {n} logical devices: TensorFlow is already initialised "
                           f"with {len(current)}. Call split_cpu() first thing in the process.") from e


def get_strategy(name: str = "one_device", cpu_replicas: int | None = None,
                 devices: Sequence[str] | None = None, tpu: str | None = None) -> tf.distribute.Strategy:
    """The distribution strategy ``name``.

    Args:
        name: one of ``one_device``, ``mirrored``, ``multi_worker_mirrored``, ``tpu``.
        cpu_replicas: for ``mirrored`` on a machine without GPUs, split the CPU into this many replicas.
        devices: explicit devices for ``mirrored``.
        tpu: TPU address or name for ``tpu`` (default: from the environment).
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy. Received: strategy={name!r}; expected one of {STRATEGIES}")
    gpus = tf.config.list_physical_devices("GPU")
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        if devices is None and not gpus:
            if cpu_replicas:
                split_cpu(cpu_replicas)
                devices = [d.name for d in tf.config.list_logical_devices("CPU")[:cpu_replicas]]
            else:
                devices = ["/cpu:0"]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker_mirrored":
        communication = tf.distribute.experimental.CommunicationImplementation.NCCL if gpus else \
            tf.distribute.experimental.CommunicationImplementation.RING
        return tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(implementation=communication))
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        strategy.cluster_resolver is not None and strategy.extended._num_workers > 1  # noqa: SLF001


def num_workers(strategy: tf.distribute.Strategy) -> int:
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return int(strategy.extended._num_workers)  # noqa: SLF001
    return 1


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True unless this process is a non-chief worker of a multi-worker cluster (TF_CONFIG)."""
    if strategy is not None and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        resolver = strategy.cluster_resolver
        task_type, task_id = resolver.task_type, resolver.task_id
    else:
        tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
        task = tf_config.get("task", {})
        task_type, task_id = task.get("type"), task.get("index", 0)
    if task_type is None:
        return True
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and not _has_chief())


def _has_chief() -> bool:
    return "chief" in json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})


def worker_index() -> int:
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    return int(task.get("index", 0))


# --------------------------------------------------------------------------- TF_CONFIG helpers
def tf_config(workers: Sequence[str], index: int, task_type: str = "worker") -> dict:
    """TF_CONFIG for a worker list (``["host1:port", "host2:port"]``), e.g. a Kubernetes StatefulSet."""
    if not workers:
        raise ValueError("tf_config needs at least one worker address.")
    if not 0 <= index < len(workers):
        raise ValueError(f"index must be in [0, {len(workers)}). Received: index={index}")
    return {"cluster": {"worker": list(workers)}, "task": {"type": task_type, "index": int(index)}}


def expand_slurm_nodelist(nodelist: str) -> list[str]:
    """Expand a SLURM node list like ``gpu[01-03,07],login1`` into host names."""
    hosts: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", nodelist):
        part = part.strip(",")
        m = re.match(r"^(.*)\[(.*)\]$", part)
        if not m:
            if part:
                hosts.append(part)
            continue
        prefix, ranges = m.groups()
        for r in ranges.split(","):
            if "-" in r:
                lo, hi = r.split("-")
                width = len(lo)
                hosts.extend(f"{prefix}{i:0{width}d}" for i in range(int(lo), int(hi) + 1))
            else:
                hosts.append(prefix + r)
    return hosts


def tf_config_from_slurm(port: int = 12345, environ: dict | None = None) -> dict:
    """TF_CONFIG for the current SLURM task: one worker per node (``SLURM_JOB_NODELIST``, ``SLURM_NODEID``),
    or one per task when several tasks share a node (``SLURM_NTASKS``, ``SLURM_PROCID``, ports port+i)."""
    env = os.environ if environ is None else environ
    try:
        hosts = expand_slurm_nodelist(env["SLURM_JOB_NODELIST"])
        ntasks = int(env.get("SLURM_NTASKS", len(hosts)))
        procid = int(env.get("SLURM_PROCID", env.get("SLURM_NODEID", 0)))
    except KeyError as e:
        raise RuntimeError(f"Not inside a SLURM job: {e.args[0]} is not set.") from None
    per_node = max(ntasks // max(len(hosts), 1), 1)
    workers = [f"{h}:{port + i}" for h in hosts for i in range(per_node)]
    return tf_config(workers, procid)


def set_tf_config(config: dict) -> None:
    os.environ["TF_CONFIG"] = json.dumps(config)


def free_ports(n: int) -> list[int]:
    """``n`` free TCP ports on 127.0.0.1."""
    import socket

    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def launch_local_workers(args: Sequence[str], n_workers: int = 2, ports: Sequence[int] | None = None,
                         env: dict | None = None, log_dir: str | None = None):
    """Start ``n_workers`` processes running ``args`` (e.g. ``["zoobot-tf", "train", ...]``) as one
    multi-worker cluster on 127.0.0.1, each with its own TF_CONFIG. Returns the Popen objects.

    For trying multi-worker training on one machine; on a cluster each node gets its TF_CONFIG from
    :func:`tf_config_from_slurm` or :func:`tf_config` instead.
    """
    import subprocess

    ports = list(ports or free_ports(n_workers))
    workers = [f"127.0.0.1:{p}" for p in ports]
    procs = []
    for i in range(n_workers):
        worker_env = {**os.environ, **(env or {}), "TF_CONFIG": json.dumps(tf_config(workers, i))}
        out = open(os.path.join(log_dir, f"worker{i}.log"), "w") if log_dir else None
        procs.append(subprocess.Popen(list(args), env=worker_env, stdout=out or subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs
