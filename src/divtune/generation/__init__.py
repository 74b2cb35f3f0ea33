"""``divtune generate``: sampling responses per prompt into a resumable generations file.

Modules, lowest first: :mod:`~divtune.generation.config` (the settings),
:mod:`~divtune.generation.plan` (seeds and the work plan),
:mod:`~divtune.generation.prompts` (reading prompts and the token ids the model is fed),
:mod:`~divtune.generation.sample_file` (the generations file and its summary),
:mod:`~divtune.generation.strategies` (``iterative`` and ``verbalized`` sampling),
the backends :mod:`~divtune.generation.hf` and :mod:`~divtune.generation.vllm`, and
:mod:`~divtune.generation.run` (the stage: checks, then a backend or a strategy).
"""
