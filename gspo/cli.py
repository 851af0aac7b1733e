"""Command line: ``gspo train|validate|eval|report|data|config`` (``gspo COMMAND --help`` for each).

torch and transformers are imported only by the commands that need them, so ``--help``, ``--version`` and
``gspo config`` answer at once, and the OpenMP wait policy is set before torch loads (:mod:`gspo.threads`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from gspo import __version__
from gspo.errors import EXIT_INPUT, EXIT_INTERNAL, EXIT_NO_PROGRESS, EXIT_OK, InputError, RunComplete
from gspo.threads import prepare_openmp_env

if TYPE_CHECKING:
    from gspo.config import GSPOConfig

ERROR_LOG = "error.log"  # in the run folder: the traceback of an unexpected error


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gspo", description="GSPO + dynamic sampling RL post-training.")
    parser.add_argument("--version", action="version", version=f"gspo {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("train", "train a policy (no arguments: the embedded addition task on CPU)"),
                       ("validate", "resolve and check config, data, model and reward without training")):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--config", help="YAML file with config groups (data, actor_rollout_ref, ...)")
        sub.add_argument("--preset", default="auto", metavar="NAME|none|auto",
                         help="an embedded task's settings under the YAML file and overrides (gspo/presets/): auto "
                              "(default) = addition when no model path is given, NAME for "
                              "actor_rollout_ref.model.path=embedded://NAME, none otherwise; none = verl's defaults")
        sub.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, applied last")

    text = "sample n responses per prompt with a local model, score them, report pass@1, pass@k, maj@k"
    sub = commands.add_parser("eval", help=text, description=text + ". Keys: n, k, temperature, top_p, top_k, "
                              "max_response_length, max_prompt_length, batch_size, limit, output_dir (default: beside "
                              "the model, MODEL/../eval/), chat_template, prompt_key, reward_path, reward_name, "
                              "device, seed, cpu_threads, engine (hf | vllm | a registered one; see "
                              "gspo/evaluate.py), and the engine keys of actor_rollout_ref.rollout given bare: dtype, "
                              "micro_batch_size and each engine's own, e.g. gpu_memory_utilization (gspo config "
                              "actor_rollout_ref.rollout lists them).")
    sub.add_argument("--model", required=True, help="local HF model folder (e.g. RUN_DIR/final_model)")
    sub.add_argument("--data", required=True, action="append", metavar="FILE",
                     help="prompt file (.parquet / .jsonl), as data.val_files; repeat for several")
    sub.add_argument("overrides", nargs="*", metavar="key=value", help="evaluation settings, e.g. n=16 temperature=1")

    text = "plot RUN_DIR/metrics.jsonl into RUN_DIR/report.png and summarise it in RUN_DIR/report.md"
    sub = commands.add_parser("report", help=text, description=text + " (needs pip install 'gspo[report]')")
    sub.add_argument("run_dir", metavar="RUN_DIR", help="a run's trainer.default_local_dir")

    text = "prepare a dataset as prompt Parquet files"
    datasets = commands.add_parser("data", help=text, description=text).add_subparsers(dest="dataset", required=True)
    text = "GSM8K original JSONL (train.jsonl, test.jsonl) -> train.parquet, test.parquet"
    sub = datasets.add_parser("gsm8k", help=text, description=text)
    sub.add_argument("--input", required=True, metavar="DIR", help="folder with the original train.jsonl, test.jsonl")
    sub.add_argument("--output", required=True, metavar="DIR", help="folder for train.parquet, test.parquet")
    text = "MATH / MATH-500 / DAPO-Math-17k as published (.parquet / .jsonl) -> DIR/SPLIT.parquet, box instruction"
    sub = datasets.add_parser("math", help=text, description=text + " (see gspo/data/math.py for the fields)")
    sub.add_argument("--input", required=True, metavar="FILE", help="the published file (one split)")
    sub.add_argument("--format", required=True, choices=["math", "math500", "dapo17k"],
                     help="math: lighteval/MATH layout (problem, solution); math500: HuggingFaceH4/MATH-500 "
                          "(problem, answer); dapo17k: BytedTsinghua-SIA/DAPO-Math-17k (prompt, reward_model)")
    sub.add_argument("--output", required=True, metavar="DIR", help="folder for SPLIT.parquet")
    sub.add_argument("--split", default=None, help="output file stem and extra_info.split (default: test for "
                     "math500, train otherwise)")
    sub.add_argument("--instruction", default="boxed", choices=["boxed", "dapo"],
                     help="boxed: problem + verl's '... within \\boxed{}.' (default); dapo: DAPO's 'Answer:' wrapper")

    text = "list every config key with its type, default and description (the schema's own comments)"
    sub = commands.add_parser("config", help=text, description=text)
    sub.add_argument("pattern", nargs="?", default="", help="only keys containing this text, e.g. filter_groups")
    sub.add_argument("--preset", default=None, metavar="NAME",
                     help="also show the values of this embedded preset (gspo/presets/NAME.yaml), e.g. addition")
    return parser


def _quiet_transformers() -> None:
    """Our own progress bar counts training steps; transformers' per-load/per-save bars only add noise."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


_HOISTED = ("--config", "--preset")  # options of train / validate that may follow the overrides


def _hoist_options(argv: list[str]) -> list[str]:
    """``train k=v --preset none k2=v2`` -> ``train --preset none k=v k2=v2``: argparse stops at an option that
    follows ``key=value`` positionals, and a flag added at the end of a long command line is easy to write."""
    if not argv or argv[0] not in ("train", "validate"):
        return argv
    options: list[str] = []
    rest: list[str] = []
    items = iter(argv[1:])
    for item in items:
        if item in _HOISTED:
            options += [item, next(items, "")]
        elif item.startswith(tuple(f"{name}=" for name in _HOISTED)):
            options.append(item)
        else:
            rest.append(item)
    return [argv[0], *options, *rest]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(_hoist_options(list(sys.argv[1:] if argv is None else argv)))
    if args.command == "config":
        from gspo.config_docs import format_keys
        from gspo.errors import ConfigError

        try:
            print(format_keys(args.pattern, args.preset))
        except ConfigError as exc:
            return _fail("config", exc, EXIT_INPUT)
        return 0
    prepare_openmp_env()  # before the first torch import
    from gspo.config import resolve_config
    from gspo.config.presets import describe_preset

    rank = int(os.environ.get("RANK", "0"))  # under torchrun, only rank 0 reports progress
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    _quiet_transformers()
    name = f"data {args.dataset}" if args.command == "data" else args.command
    config = None
    if args.command == "train":
        from gspo.trainer.signals import interrupt_on_signals

        interrupt_on_signals()  # until the training loop takes over: a signal during start-up ends in one line
    try:
        if args.command == "eval":
            return evaluate(args.model, args.data, args.overrides)
        if args.command == "report":
            return report(args.run_dir)
        if args.command == "data":
            return prepare_data(args)
        config, preset = resolve_config(args.config, args.overrides, args.preset)
        if args.command == "validate":
            return validate(config, preset)
        if launch := torchrun_command(config, argv if argv is not None else sys.argv[1:]):
            return launch_torchrun(launch)  # rank 0 of the relaunch names the preset
        if rank == 0:
            print(describe_preset(preset), flush=True)
        return train(config)
    except RunComplete as done:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"gspo {name}: already complete: {done}")
        return EXIT_OK
    except InputError as exc:  # ConfigError, DataError, RewardError, ModelLoadError, RunFolderError, ...
        return _fail(name, exc, EXIT_INPUT)
    except Exception as exc:
        from gspo.trainer import DynamicSamplingError
        from gspo.trainer.run_folder import StorageError

        if isinstance(exc, StorageError):
            return _fail(name, exc, exc.exit_code, every_rank=True)
        from gspo.trainer.async_rollout import PoolStopped

        if isinstance(exc, PoolStopped):  # a rank of the other pool died; its own output says why
            return _fail(name, exc, EXIT_INTERNAL)
        if isinstance(exc, (DynamicSamplingError, FloatingPointError)):
            return _fail(name, exc, EXIT_NO_PROGRESS)
        return _internal_error(name, exc, config)
    except BaseException as exc:
        from gspo.trainer.signals import Interrupted

        if isinstance(exc, Interrupted):
            return _fail(name, exc, exc.exit_code, label="stopped")
        raise


def _fail(name: str, exc: BaseException, code: int, *, label: str = "error", every_rank: bool = False) -> int:
    """One line on stderr; under torchrun only rank 0 prints errors every rank reaches alike."""
    if every_rank or int(os.environ.get("RANK", "0")) == 0:
        print(f"gspo {name}: {label}: {exc}", file=sys.stderr)
    return code


def _internal_error(name: str, exc: Exception, config: GSPOConfig | None) -> int:
    """An error no check anticipated (ours, torch's, a plugin's): the whole traceback on stderr, kept in the run
    folder's ``error.log`` (``error_rank{R}.log`` under torchrun) when there is one, and a last line saying so."""
    text = "".join(traceback.format_exception(exc))
    print(text, file=sys.stderr, end="")
    where = "above"
    if config is not None and name == "train":
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        log_file = Path(config.trainer.default_local_dir) / (ERROR_LOG if world == 1 else f"error_rank{rank}.log")
        try:
            with log_file.open("a") as out:
                out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} gspo {name}\n{text}\n")
            where = f"above and in {log_file}"
        except OSError:
            pass  # the folder may be the problem; stderr still has it
    first = (str(exc).splitlines() or [""])[0]
    print(f"gspo {name}: internal error: {type(exc).__name__}: {first} (unexpected; traceback {where})",
          file=sys.stderr)
    return EXIT_INTERNAL


def launch_torchrun(command: list[str]) -> int:
    """Run torchrun's launcher in this process (``command`` is the torchrun line of :func:`torchrun_command`).

    Signals (Ctrl-C, SIGTERM from a scheduler) reach it directly; it forwards them to every rank, which checkpoint
    and stop together. The ranks print their own one-line outcome: the launcher returns the first failed rank's
    exit code (128+N for a signal) instead of torchrun's traceback.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.update(torchrun_env())
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # the ranks' lines say it
    try:
        run(get_args_parser().parse_args(command[3:]))  # command[:3] is: python -m torch.distributed.run
    except SignalException as exc:
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        rank, failure = min(exc.failures.items())
        if failure.exitcode < 0:
            print(f"gspo train: rank {rank} died of signal {-failure.exitcode}", file=sys.stderr)
            return 128 - failure.exitcode
        return failure.exitcode
    return 0


def validate(config: GSPOConfig, preset: str | None = None) -> int:
    """Check everything a run needs up front (data files, model path, reward function); train nothing. The
    resolved config is printed as YAML, its preset (:mod:`gspo.config.presets`) as the first comment line."""
    from gspo.config import to_yaml
    from gspo.config.presets import describe_preset
    from gspo.trainer.preflight import preflight

    report = preflight(config)
    print(f"# {describe_preset(preset)}")
    print(to_yaml(config))
    print(report)
    return 0


def torchrun_command(config: GSPOConfig, argv: list[str]) -> list[str] | None:
    """The torchrun line that re-runs this ``gspo train`` on trainer.nnodes x trainer.n_gpus_per_node processes;
    None when one process is asked for or we already run under torchrun.

    Multi-node: run the same command on every node with MASTER_ADDR, MASTER_PORT (default 29500) and NODE_RANK set.
    """
    from gspo.config import ConfigError
    nnodes, per_node = _node_groups(config)
    if nnodes * per_node <= 1 or "WORLD_SIZE" in os.environ:
        return None
    command = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--nproc_per_node={per_node}"]
    if nnodes == 1:
        command.append("--standalone")
    else:
        missing = [name for name in ("MASTER_ADDR", "NODE_RANK") if name not in os.environ]
        if missing:
            raise ConfigError(f"trainer.nnodes={nnodes}: set {' and '.join(missing)} (and MASTER_PORT) on every "
                              f"node, or launch with torchrun yourself")
        command += [f"--node_rank={os.environ['NODE_RANK']}", f"--master_addr={os.environ['MASTER_ADDR']}",
                    f"--master_port={os.environ.get('MASTER_PORT', '29500')}"]
    return command + ["-m", "gspo.train", *argv[1:]]  # argv[0] is "train"


def _node_groups(config: GSPOConfig) -> tuple[int, int]:
    """(nodes, processes per node) of the torchrun launch. A rollout pool (mode=async) comes after the trainer
    ranks: on the trainer's one node (both nnodes=1 and no NODE_RANK set), or on nodes of its own after the
    trainer's (a multi-node launch: NODE_RANK 0..trainer.nnodes-1 train, the next actor_rollout_ref.rollout.nnodes
    generate; validation keeps the per-node counts equal)."""
    from gspo.config import ConfigError
    from gspo.config.validation import rollout_pool_size

    trainer, rollout = config.trainer, config.actor_rollout_ref.rollout
    if rollout_pool_size(config) == 0:
        return trainer.nnodes, trainer.n_gpus_per_node
    if trainer.nnodes == 1 and rollout.nnodes == 1 and "NODE_RANK" not in os.environ:
        return 1, trainer.n_gpus_per_node + rollout.n_gpus_per_node
    if rollout.n_gpus_per_node != trainer.n_gpus_per_node:
        raise ConfigError(f"actor_rollout_ref.rollout.n_gpus_per_node={rollout.n_gpus_per_node} differs from "
                          f"trainer.n_gpus_per_node={trainer.n_gpus_per_node}: a multi-node launch (NODE_RANK is set) "
                          f"puts each pool on nodes of its own with the same processes per node; make them equal, or "
                          f"unset NODE_RANK to share one node")
    return trainer.nnodes + rollout.nnodes, trainer.n_gpus_per_node


# torchrun SIGKILLs its workers this many seconds after forwarding a stop signal (its default is 30 s). A graceful
# stop finishes the current step and writes a checkpoint, which takes minutes for a 3B model, so wait longer.
GRACEFUL_STOP_TIMEOUT_S = 1800


def torchrun_env() -> dict[str, str]:
    """The environment for the torchrun launch: ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` defaults to
    :data:`GRACEFUL_STOP_TIMEOUT_S` unless already set (older torch releases ignore it and stop workers
    30 s after a signal: a warning says so)."""
    from dataclasses import fields

    from torch.distributed.launcher.api import LaunchConfig

    if "shutdown_timeout" not in {f.name for f in fields(LaunchConfig)}:
        logging.getLogger(__name__).warning(
            "this torch's torchrun kills workers 30 s after a stop signal: a graceful stop (SIGINT / SIGTERM) may "
            "not finish its checkpoint; the last complete checkpoint stays usable")
    return {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(GRACEFUL_STOP_TIMEOUT_S), **os.environ}


def train(config: GSPOConfig) -> int:
    from gspo.report import format_run_summary
    from gspo.threads import apply_threads
    from gspo.trainer import Trainer, TrainingInterrupted
    from gspo.trainer.run_folder import release_lock

    apply_threads(config.trainer.cpu_threads, processes_per_node=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    from gspo.trainer.async_rollout import is_rollout_rank

    if is_rollout_rank(config):  # a rank of the rollout pool: generates, never writes to the run folder
        from gspo.trainer.builder import build_rollout_worker

        build_rollout_worker(config).run()
        return 0
    start = time.perf_counter()
    try:
        Trainer(config).fit()
    except TrainingInterrupted as stop:
        return _fail("train", stop, stop.exit_code, label="stopped")
    finally:  # also when start-up failed after taking the lock (a caller may start another run in this process)
        release_lock(Path(config.trainer.default_local_dir))
    if int(os.environ.get("RANK", "0")) == 0:
        eval_data = config.data.val_files[0] if config.data.val_files else None
        print(format_run_summary(config.trainer.default_local_dir, time.perf_counter() - start, eval_data))
    return 0


def evaluate(model: str, data: list[str], overrides: list[str]) -> int:
    from gspo.evaluate import evaluate as run_eval
    from gspo.evaluate import format_summary, parse_eval_args
    from gspo.threads import apply_threads

    cfg = parse_eval_args(overrides)  # before loading anything: a typo fails in a second, not after the model
    apply_threads(cfg.cpu_threads)
    print(format_summary(run_eval(model, data, cfg)))
    return 0


def report(run_dir: str) -> int:
    from gspo.report import write_report

    png, md, _ = write_report(run_dir)  # a missing matplotlib is an InputError saying what to install
    print(f"wrote {png}" if png else "no known metric logged: no plot written")
    print(f"wrote {md}")
    return 0


def prepare_data(args: argparse.Namespace) -> int:
    if args.dataset == "math":
        from gspo.data.math import prepare_math

        done = prepare_math(args.input, args.format, args.output, args.split, args.instruction)
        repeats = f" ({done['duplicates_dropped']} repeated problems dropped)" if done["duplicates_dropped"] else ""
        print(f"{done['path']}: {done['rows']} rows{repeats}")
        return 0
    from gspo.data.gsm8k import prepare_gsm8k

    counts = prepare_gsm8k(args.input, args.output)
    print(", ".join(f"{args.output}/{split}.parquet: {num} rows" for split, num in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
