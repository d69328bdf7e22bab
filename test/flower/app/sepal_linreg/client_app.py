"""ClientApp: local gradient steps on this node's partition, and evaluation of the global model.

The partition comes from the SuperNode's node config, e.g.
    flower-supernode ... --node-config 'partition-id=0 num-partitions=2'
Both keys are required. The data seed comes from the run config (`data-seed`); step count and
learning rate come from the ServerApp's train config, so every node uses the same values.
"""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from sepal_linreg.task import load_partition, mse, train_local

app = ClientApp()


def _as_int(value: Any, name: str) -> int:
    # Config values arrive as TOML-typed scalars; accept "3" or 3.0 as 3 too.
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(number)


def _partition(context: Context) -> tuple[Any, Any]:
    node_config = context.node_config
    for key in ("partition-id", "num-partitions"):
        if key not in node_config:
            raise ValueError(f"node config lacks {key!r} (flower-supernode --node-config)")
    return load_partition(
        _as_int(context.run_config.get("data-seed", 20240607), "data-seed"),
        _as_int(node_config["partition-id"], "partition-id"),
        _as_int(node_config["num-partitions"], "num-partitions"),
    )


def _model(msg: Message) -> tuple[Any, Any]:
    w, b = msg.content["arrays"].to_numpy_ndarrays()
    return w, b


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train from the received global model and return the new local model."""
    x, y = _partition(context)
    w, b = _model(msg)
    config = msg.content["config"]
    steps = _as_int(config["local-steps"], "local-steps")
    learning_rate = float(config["learning-rate"])
    w, b = train_local(w, b, x, y, steps, learning_rate)
    content = RecordDict(
        {
            "arrays": ArrayRecord([w, b]),
            "metrics": MetricRecord(
                {"train-loss": mse(w, b, x, y), "num-examples": int(x.shape[0])}
            ),
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Loss (MSE) of the received global model on this node's partition."""
    x, y = _partition(context)
    w, b = _model(msg)
    content = RecordDict(
        {"metrics": MetricRecord({"loss": mse(w, b, x, y), "num-examples": int(x.shape[0])})}
    )
    return Message(content=content, reply_to=msg)
