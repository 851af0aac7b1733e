r"""Math answers verified with math-verify: extraction, a deadline-keeping worker pool, registered rewards.

Registered data_source names: "math", "lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval",
"HuggingFaceH4/MATH-500" (score 1 / 0), "math_dapo" and every name starting with "aime" (score 1 / -1).
"""

from gspo.rewards.math.extract import extract_final_answer
from gspo.rewards.math.pool import Verdict, VerifierPool, configure_shared_pool, set_shared_pool, shared_pool
from gspo.rewards.math.reward import (
    DAPO_SOURCES,
    MATH_SOURCES,
    MathVerifyFailure,
    MathVerifyTimeout,
    dapo_math_reward,
    is_math_source,
    math_reward,
    merge_equivalent,
    verify_pairs,
)

__all__ = [
    "DAPO_SOURCES",
    "MATH_SOURCES",
    "MathVerifyFailure",
    "MathVerifyTimeout",
    "Verdict",
    "VerifierPool",
    "configure_shared_pool",
    "dapo_math_reward",
    "extract_final_answer",
    "is_math_source",
    "math_reward",
    "merge_equivalent",
    "set_shared_pool",
    "shared_pool",
    "verify_pairs",
]
