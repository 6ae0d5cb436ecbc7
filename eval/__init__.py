"""Evaluation of SpecReason against its baselines: data sets, runner, report (grading is
``sgl_specreason.grading``, shared with every command)."""
