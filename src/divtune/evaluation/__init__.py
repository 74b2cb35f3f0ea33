"""``divtune evaluate``: diversity and quality metrics of generation files (docs/method.md §7).

A module per step; the metric formulas themselves are :mod:`divtune.metrics`, their
intervals :mod:`divtune.statistics`.

- :mod:`~divtune.evaluation.config`: ``EvaluateConfig``, the settings;
- :mod:`~divtune.evaluation.keys`: the metric keys and file names of an evaluation folder;
- :mod:`~divtune.evaluation.systems`: a system's samples per prompt, read from a generations file;
- :mod:`~divtune.evaluation.gold`: the human ``gold`` rows of a prepared folder (and ``gold-matched``);
- :mod:`~divtune.evaluation.gold_file`: the ``gold`` row of a raw data file, its prompts matched to the systems';
- :mod:`~divtune.evaluation.quality`: reward-model quality and the threshold of effective diversity;
- :mod:`~divtune.evaluation.scores`: per-prompt scores of a system and their means with intervals;
- :mod:`~divtune.evaluation.run`: ``run_evaluate``, the steps in order, and the folder it writes.
"""
