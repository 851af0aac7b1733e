"""CPU threads: the OpenMP wait policy is set before torch loads, thread counts follow key > env > usable cores."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gspo.threads import choose_threads, prepare_openmp_env, usable_cores

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "GOMP_SPINCOUNT")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**base, "PYTHONPATH": REPO, **env})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_key_wins_over_environment_and_environment_over_usable_cores():
    assert choose_threads(3, {"GSPO_NUM_THREADS": "2", "OMP_NUM_THREADS": "1"}) == (3, "trainer.cpu_threads")
    assert choose_threads(0, {"GSPO_NUM_THREADS": "2", "OMP_NUM_THREADS": "1"}) == (2, "GSPO_NUM_THREADS")
    assert choose_threads(0, {"OMP_NUM_THREADS": "1"}) == (1, "OMP_NUM_THREADS")
    threads, source = choose_threads(0, {})
    assert source == "usable cores" and threads >= 1


@pytest.mark.parametrize("value", ["two", "0"])
def test_bad_thread_variable_names_itself(value):
    with pytest.raises(ValueError, match=f"GSPO_NUM_THREADS={value!r}"):
        choose_threads(0, {"GSPO_NUM_THREADS": value})


def test_default_is_one_thread_per_usable_core_split_over_local_ranks():
    cores = len(os.sched_getaffinity(0))
    assert usable_cores() == cores
    assert choose_threads(0, {}) == (cores, "usable cores")
    assert choose_threads(0, {}, processes_per_node=cores) == (1, "usable cores")
    assert choose_threads(0, {}, processes_per_node=4 * cores) == (1, "usable cores")  # never 0


def test_passive_wait_with_a_bounded_spin_unless_the_user_chose_a_spin_count():
    code = ("import os; from gspo.threads import prepare_openmp_env; prepare_openmp_env(); "
            "print(os.environ['OMP_WAIT_POLICY'], os.environ['GOMP_SPINCOUNT'])")
    assert _python(code) == "PASSIVE 10000"
    assert _python(code, GOMP_SPINCOUNT="0") == "PASSIVE 0"


def test_wait_policy_is_kept_when_the_user_chose_one():
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    prepare_openmp_env(env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_cli_sets_passive_wait_before_torch_and_picks_threads():
    code = ("import os, sys; from gspo.cli import main; from gspo.threads import prepare_openmp_env; "
            "assert 'torch' not in sys.modules; prepare_openmp_env(); import torch; "
            "from gspo.threads import apply_threads; n = apply_threads(0); "
            "print(os.environ['OMP_WAIT_POLICY'], n == torch.get_num_threads())")
    assert _python(code) == "PASSIVE True"
    assert _python("from gspo.threads import apply_threads; import torch; apply_threads(0); "
                   "print(torch.get_num_threads())", GSPO_NUM_THREADS="1") == "1"


def test_help_version_and_config_do_not_import_torch():
    code = ("import sys, contextlib, io; from gspo.cli import main\n"
            "for argv in (['--version'], ['--help'], ['train', '--help']):\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()): main(argv)\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['config'])\n"
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    assert _python(code) == "False False"
