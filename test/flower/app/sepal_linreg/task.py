"""The learning task, numpy only: data, local training, loss.

Shared by the ClientApp and by `reference.py` (which replays the federation without Flower), so
both see exactly the same data and the same local steps.

Data: one global synthetic data set of `NUM_EXAMPLES` rows, y = X.w + b + noise, drawn from
`numpy.random.default_rng(data_seed)`. It is cut into `num_partitions` contiguous slices whose
sizes grow with the partition id (1:2:3:...), so FedAvg's weighting by example count matters.
Model: `w` (NUM_FEATURES,) and `b` (1,), both float64, starting at zero.
"""

from __future__ import annotations

import numpy as np

NUM_FEATURES = 3
NUM_EXAMPLES = 120
TRUE_WEIGHTS = np.array([1.5, -2.0, 0.5], dtype=np.float64)
TRUE_BIAS = 0.75
NOISE = 0.1


def global_dataset(data_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole synthetic data set (X, y); deterministic for a seed."""
    rng = np.random.default_rng(data_seed)
    x = rng.standard_normal((NUM_EXAMPLES, NUM_FEATURES))
    y = x @ TRUE_WEIGHTS + TRUE_BIAS + NOISE * rng.standard_normal(NUM_EXAMPLES)
    return x, y


def partition_bounds(partition_id: int, num_partitions: int) -> tuple[int, int]:
    """[start, end) of a partition: sizes proportional to 1, 2, ..., num_partitions."""
    if num_partitions < 1 or num_partitions > 10:
        raise ValueError(f"num-partitions must be in 1..10, got {num_partitions}")
    if partition_id < 0 or partition_id >= num_partitions:
        raise ValueError(
            f"partition-id must be in 0..{num_partitions - 1}, got {partition_id}"
        )
    total_parts = num_partitions * (num_partitions + 1) // 2
    cut = [NUM_EXAMPLES * (k * (k + 1) // 2) // total_parts for k in range(num_partitions + 1)]
    return cut[partition_id], cut[partition_id + 1]


def load_partition(
    data_seed: int, partition_id: int, num_partitions: int
) -> tuple[np.ndarray, np.ndarray]:
    """The slice (X, y) a node owns."""
    x, y = global_dataset(data_seed)
    start, end = partition_bounds(partition_id, num_partitions)
    return x[start:end], y[start:end]


def initial_model() -> tuple[np.ndarray, np.ndarray]:
    """Starting global model (w, b): zeros."""
    return np.zeros(NUM_FEATURES, dtype=np.float64), np.zeros(1, dtype=np.float64)


def mse(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error of (w, b) on (x, y)."""
    residual = x @ w + b[0] - y
    return float(np.mean(residual * residual))


def train_local(
    w: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    steps: int,
    learning_rate: float,
) -> tuple[np.ndarray, np.ndarray]:
    """`steps` full-batch gradient-descent steps on the MSE, from (w, b)."""
    w = np.array(w, dtype=np.float64, copy=True)
    b = np.array(b, dtype=np.float64, copy=True)
    n = x.shape[0]
    for _ in range(steps):
        residual = x @ w + b[0] - y
        grad_w = (2.0 / n) * (x.T @ residual)
        grad_b = (2.0 / n) * np.sum(residual)
        w = w - learning_rate * grad_w
        b = b - learning_rate * np.array([grad_b])
    return w, b
