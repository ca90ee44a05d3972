"""`kbqa eval`: the same questions through several model variants, scored and compared honestly."""

from kbqa.evaluation.run import EvalConfig, Variant, parse_variant, read_questions, run_eval

__all__ = ["EvalConfig", "Variant", "parse_variant", "read_questions", "run_eval"]
