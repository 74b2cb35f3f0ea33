"""Human evaluation kit: a blinded side-by-side comparison page and its analysis.

- :mod:`divtune.humaneval.study`: ``divtune humaneval build``, generation files
  and system pairs → a study folder (``index.html``, ``items.csv``,
  ``study.json``, the unblinding ``key.json``);
- :mod:`divtune.humaneval.page`: the self-contained HTML page (inline CSS/JS);
- :mod:`divtune.humaneval.answers`: reading and checking annotators' answer files;
- :mod:`divtune.humaneval.stats`: win/tie/loss with Wilson intervals, exact sign
  tests, Krippendorff's alpha;
- :mod:`divtune.humaneval.analyze`: ``divtune humaneval analyze``;
- :mod:`divtune.humaneval.power`: how many judgments a study needs.
"""
