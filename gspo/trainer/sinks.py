"""Optional metric sinks named in ``trainer.logger``: wandb and mlflow, both working offline by default.

- ``wandb``: offline mode (files under ``RUN_DIR/wandb``, upload later with ``wandb sync``) unless ``WANDB_MODE``
  says otherwise; project ``trainer.project_name``, run name ``trainer.experiment_name``.
- ``mlflow``: a file store in ``RUN_DIR/mlruns`` (browse with ``mlflow ui --backend-store-uri RUN_DIR/mlruns``)
  unless ``MLFLOW_TRACKING_URI`` is set; experiment ``trainer.project_name``, run name ``trainer.experiment_name``.

Each sink has ``log(step, metrics)`` and ``close()``; :class:`gspo.trainer.metrics.MetricsLogger` calls them
after writing ``metrics.jsonl``. Only rank 0 builds sinks. A missing library fails at start-up naming the extra.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gspo.config import ConfigError

EXTRAS = {"wandb": "pip install 'gspo[wandb]' (or pip install wandb)",
          "mlflow": "pip install 'gspo[mlflow]' (or pip install mlflow-skinny)"}


class MissingLoggerError(ConfigError, ImportError):
    """trainer.logger names a sink whose library is not installed (a usage error: exit code 2)."""


def _require(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MissingLoggerError(f"trainer.logger: {name!r} needs the {name} library: {EXTRAS[name]}, or drop "
                                 f"{name} from trainer.logger") from exc


class WandbSink:
    def __init__(self, output_dir: Path, project: str, name: str, config: dict[str, Any] | None) -> None:
        wandb = _require("wandb")
        self._run = wandb.init(project=project, name=name, dir=str(output_dir), config=config or {},
                               mode=os.environ.get("WANDB_MODE", "offline"), reinit="create_new")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self._run.log(dict(metrics), step=step)

    def close(self) -> None:
        self._run.finish()


class MlflowSink:
    def __init__(self, output_dir: Path, project: str, name: str, config: dict[str, Any] | None) -> None:
        mlflow = _require("mlflow")
        from mlflow.entities import Param

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # a file store needs no server and no database library; mlflow >= 3.x asks to opt in to it
            uri = (output_dir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = self._client.get_experiment_by_name(project)
        experiment_id = experiment.experiment_id if experiment else self._client.create_experiment(project)
        self._run_id = self._client.create_run(experiment_id, run_name=name).info.run_id
        params = [Param(key, str(value)[:500]) for key, value in _flatten(config or {})]
        for first in range(0, len(params), 100):  # mlflow takes at most 100 params per batch
            self._client.log_batch(self._run_id, params=params[first:first + 100])

    def log(self, step: int, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        for first in range(0, len(batch), 1000):
            self._client.log_batch(self._run_id, metrics=batch[first:first + 1000])

    def close(self) -> None:
        self._client.set_terminated(self._run_id)


SINKS = {"wandb": WandbSink, "mlflow": MlflowSink}


def build_sinks(loggers, output_dir: Path, *, project: str, name: str, config: dict[str, Any] | None = None) -> list:
    """The sinks among ``loggers`` (console / tensorboard are handled elsewhere)."""
    return [SINKS[kind](output_dir, project, name, config) for kind in loggers if kind in SINKS]


def _flatten(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        items.extend(_flatten(value, dotted + ".") if isinstance(value, dict) else [(dotted, value)])
    return items
