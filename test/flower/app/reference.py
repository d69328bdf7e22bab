"""Replays the app's federation without Flower and prints the result JSON the ServerApp writes.

Same data (sepal_linreg.task), same local steps, and FedAvg's example-weighted averages of the
models (and of the evaluation losses), so a test can compare Flower's result with this one. Only
the order of floating-point additions may differ from Flower's (replies arrive in any order),
hence a tolerance of about 1e-9 when comparing.

    python reference.py [--num-partitions 2] [--num-rounds N] [--local-steps N]
                        [--learning-rate X] [--data-seed N]

Defaults come from [tool.flwr.app.config] in pyproject.toml next to this file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

try:
    import tomllib  # Python 3.11+
except ModuleNotFoundError:  # pragma: no cover - older Pythons get tomli with flwr
    import tomli as tomllib  # type: ignore[no-redef]

import numpy as np  # noqa: E402

from sepal_linreg.task import initial_model, load_partition, mse, train_local  # noqa: E402


def _defaults() -> dict:
    with (HERE / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)["tool"]["flwr"]["app"]["config"]


def federate(
    num_partitions: int, num_rounds: int, local_steps: int, learning_rate: float, data_seed: int
) -> dict:
    """FedAvg over `num_partitions` nodes, one per partition, all sampled every round."""
    partitions = [load_partition(data_seed, p, num_partitions) for p in range(num_partitions)]
    sizes = [int(x.shape[0]) for x, _ in partitions]
    factors = [n / sum(sizes) for n in sizes]
    w, b = initial_model()
    losses: list[float] = []
    train_losses: list[float] = []
    for _ in range(num_rounds):
        local = [train_local(w, b, x, y, local_steps, learning_rate) for x, y in partitions]
        w = sum(lw * f for (lw, _), f in zip(local, factors))
        b = sum(lb * f for (_, lb), f in zip(local, factors))
        train_losses.append(
            sum(mse(lw, lb, x, y) * f for (lw, lb), (x, y), f in zip(local, partitions, factors))
        )
        losses.append(sum(mse(w, b, x, y) * f for (x, y), f in zip(partitions, factors)))
    w = np.asarray(w)
    b = np.asarray(b)
    return {
        "num-rounds": num_rounds,
        "weights": [float(v) for v in w],
        "bias": float(b[0]),
        "losses": [float(v) for v in losses],
        "train-losses": [float(v) for v in train_losses],
    }


def main() -> None:
    defaults = _defaults()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-partitions", type=int, default=2)
    parser.add_argument("--num-rounds", type=int, default=int(defaults["num-server-rounds"]))
    parser.add_argument("--local-steps", type=int, default=int(defaults["local-steps"]))
    parser.add_argument("--learning-rate", type=float, default=float(defaults["learning-rate"]))
    parser.add_argument("--data-seed", type=int, default=int(defaults["data-seed"]))
    args = parser.parse_args()
    result = federate(
        args.num_partitions, args.num_rounds, args.local_steps, args.learning_rate, args.data_seed
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
