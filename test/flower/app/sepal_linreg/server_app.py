"""ServerApp: FedAvg (weighted by example count) for `num-server-rounds`, then the result as JSON.

Run config (defaults in pyproject.toml; override with `flwr run --run-config`): values may arrive
as other TOML types than the defaults (e.g. 3.0 or "3" for an integer), so each is coerced here.
If `result-path` is not empty, the ServerApp writes there (atomically: temp file + rename):

    {"num-rounds": 3, "weights": [w1, w2, w3], "bias": b,
     "losses": [loss after round 1, ...], "train-losses": [...], "flwr-version": "1.23.0"}

`losses[r]` is the example-weighted mean of the ClientApps' MSE of the global model after round
r+1, which is the MSE on the union of all partitions.
"""

from __future__ import annotations

import json
import os
from logging import INFO
from pathlib import Path
from typing import Any

import flwr
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from sepal_linreg.task import initial_model

app = ServerApp()


def _int(config: Any, key: str, default: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool):
        raise ValueError(f"run config {key!r} must be an integer, got {value!r}")
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"run config {key!r} must be an integer, got {value!r}")
    return int(number)


def _float(config: Any, key: str, default: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool):
        raise ValueError(f"run config {key!r} must be a number, got {value!r}")
    return float(value)


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run FedAvg and report the final model and per-round losses."""
    config = context.run_config
    num_rounds = _int(config, "num-server-rounds", 3)
    min_nodes = _int(config, "min-nodes", 2)
    train_config = ConfigRecord(
        {
            "local-steps": _int(config, "local-steps", 5),
            "learning-rate": _float(config, "learning-rate", 0.05),
        }
    )
    result_path = str(config.get("result-path", "") or "")
    if num_rounds < 1 or min_nodes < 1:
        raise ValueError("num-server-rounds and min-nodes must be at least 1")

    w0, b0 = initial_model()
    strategy = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=min_nodes,
        min_evaluate_nodes=min_nodes,
        min_available_nodes=min_nodes,
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord([w0, b0]),
        num_rounds=num_rounds,
        train_config=train_config,
        timeout=300.0,
    )

    w, b = result.arrays.to_numpy_ndarrays()
    losses = []
    train_losses = []
    for current_round in range(1, num_rounds + 1):
        evaluated = result.evaluate_metrics_clientapp.get(current_round)
        trained = result.train_metrics_clientapp.get(current_round)
        losses.append(float(evaluated["loss"]) if evaluated is not None else None)
        train_losses.append(float(trained["train-loss"]) if trained is not None else None)
    payload = {
        "num-rounds": num_rounds,
        "weights": [float(v) for v in w],
        "bias": float(b[0]),
        "losses": losses,
        "train-losses": train_losses,
        "flwr-version": flwr.__version__,
    }
    log(INFO, "sepal-linreg result: %s", json.dumps(payload))
    if result_path:
        _write_json_atomically(Path(result_path), payload)
        log(INFO, "sepal-linreg result written to %s", result_path)
