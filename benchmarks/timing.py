"""Timing shared by the benchmark scripts (no TensorFlow or torch import, so the PyTorch peer can use it)."""
import statistics
import time


def images_per_second(fn, batch: int, steps: int, repeats: int = 3) -> float:
    """Median over ``repeats`` timings of ``steps`` calls of ``fn`` (after one warm-up call), as images/s."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        times.append(time.perf_counter() - start)
    return batch * steps / statistics.median(times)


def write_json(result: dict, out) -> None:
    """Write a benchmark's result as JSON (creating its folder) and say where."""
    import json
    from pathlib import Path

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
