"""Scoring an encoder on the evaluation sets: the paper's tasks (tasks.py), their metrics (scores.py), the sets'
format (sets.py) and an embedding cache. The trainer validates with it; the `eval/` commands build the sets
(build_sets, citations), run the benchmark (run) and write the report (report)."""
