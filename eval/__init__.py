"""Evaluation of SpecReason against its baselines: data sets, grading, runner, report."""
