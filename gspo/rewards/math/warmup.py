"""Imported by the verifier forkserver only: math-verify's first comparison of each kind of answer loads parts of
sympy lazily (~0.1-0.3 s each); doing one of each here, before any worker is forked, makes every worker (and every
replacement of a killed one) start warm. Importing this module has that side effect on purpose."""

from gspo.rewards.math.verifier import answers_match, quiet_math_verify

quiet_math_verify()
for _gold, _pred in ((r"\frac{1}{2}", "0.5"), ("3", "x=3"), ("[1,2)", "[1, 2)"), (r"\{1,2\}", "2,1"),
                     ("(1,2)", "(2,1)"), (r"2\sqrt{5}", r"\sqrt{20}"), ("(x+1)^2", "x^2+2x+1"),
                     (r"\frac{\pi}{3}", r"\frac{1}{3}\pi"), ("50", r"50\%"), ("5", r"5\text{ cm}")):
    answers_match(_gold, _pred)
