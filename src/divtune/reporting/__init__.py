"""Reports on divtune's outputs: ``divtune report`` (evaluation folders) and ``divtune diagnostics`` (training runs).

- ``systems``: the systems of evaluation folders, loaded, named apart, pooled over seeds;
- ``comparisons``: paired differences against baselines, and interactions;
- ``tables``: the report's tables as formatted cells;
- ``plots``: the matplotlib figures of both reports;
- ``samples``: sample texts of each system;
- ``render``: a report described once as blocks, rendered to Markdown and HTML;
- ``document``: what the evaluation report says, as blocks;
- ``run``: ``run_report``, the evaluation report's steps;
- ``training_logs``, ``pair_weights``, ``diagnostics``: the training diagnostics.

Import the module you need (``divtune.reporting.run``); this package imports nothing,
so the light modules (``render``) stay light.
"""
