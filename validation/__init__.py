"""The validation corpus: recorded runs, their ground truth, and the advisor's score against it.

``workloads`` and ``schedules`` describe the tasks, ``corpus`` the runs, ``measure`` the
ground-truth measurements the recording takes (full-train evaluations and branches), ``truth``
the rules that turn them into labels (pure functions), ``record`` the recording script and
``report`` the advisor's score. See docs/validation.md.
"""
