from __future__ import annotations

import textwrap

import pytest

from gspo.rewards import RewardError, get_reward_fn, load_custom_reward, register_reward, registered_rewards


def test_builtins_registered():
    assert {"openai/gsm8k", "gsm8k", "addition"} <= set(registered_rewards())


def test_register_and_lookup(clean_registry):
    @register_reward("my_task", "my_task_v2")
    def my_reward(response, gt, extra):
        return 1.0

    assert get_reward_fn("my_task") is my_reward
    assert get_reward_fn("my_task_v2") is my_reward


def test_unknown_data_source_lists_names():
    with pytest.raises(
        RewardError, match=r"no reward function registered for data_source 'nope'; registered: \[.*'addition'.*'gsm8k'"
    ):
        get_reward_fn("nope")


def test_conflicting_registration(clean_registry):
    with pytest.raises(RewardError, match="'gsm8k' is already registered"):
        register_reward("gsm8k")(lambda r, g, e: 0.0)

    def replacement(r, g, e):
        return 0.0

    register_reward("gsm8k", override=True)(replacement)
    assert get_reward_fn("gsm8k") is replacement


def test_register_needs_names():
    with pytest.raises(ValueError, match="one or more non-empty names"):
        register_reward()


def write(tmp_path, name, source):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def test_load_custom_reward(tmp_path):
    path = write(
        tmp_path,
        "my_reward.py",
        """
        from dataclasses import dataclass

        @dataclass
        class Cfg:
            bonus: float = 0.5

        def compute_score(response_text, ground_truth, extra_info):
            return {"score": float(response_text == ground_truth) + Cfg().bonus}

        def other(response_text, ground_truth, extra_info):
            return 0.0
        """,
    )
    fn = load_custom_reward(path)
    assert fn("a", "a", {}) == {"score": 1.5}
    assert load_custom_reward(str(path), "other")("a", "a", {}) == 0.0


def test_load_missing_file(tmp_path):
    with pytest.raises(RewardError, match=r"custom reward file not found: .*nope\.py"):
        load_custom_reward(tmp_path / "nope.py", "f")


def test_load_import_error_shows_exception(tmp_path):
    path = write(tmp_path, "broken.py", "import definitely_not_a_module_xyz\n")
    with pytest.raises(
        RewardError, match=r"importing custom reward file .*broken\.py failed: ModuleNotFoundError"
    ) as info:
        load_custom_reward(path, "f")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_load_syntax_error(tmp_path):
    path = write(tmp_path, "syntax.py", "def f(:\n")
    with pytest.raises(RewardError, match="SyntaxError"):
        load_custom_reward(path, "f")


def test_load_missing_function_lists_callables(tmp_path):
    path = write(
        tmp_path, "fns.py", "def alpha(r, g, e): return 0.0\ndef beta(r, g, e): return 1.0\n_private = len\nX = 3\n"
    )
    with pytest.raises(RewardError, match=r"has no function 'gamma'; callables in it: \['alpha', 'beta'\]"):
        load_custom_reward(path, "gamma")


def test_load_not_callable(tmp_path):
    path = write(tmp_path, "const.py", "score = 3\n")
    with pytest.raises(RewardError, match="'score' in custom reward file .* is a int, not a function"):
        load_custom_reward(path, "score")
