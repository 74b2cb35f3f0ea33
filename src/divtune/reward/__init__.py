"""Every reward divtune computes.

- The learned quality reward model (docs/reward.md): its settings (:mod:`.config`), the
  prepared data it learns from (:mod:`.data`, :mod:`.pairs`), the model (:mod:`.model`),
  its training with early stopping (:mod:`.fit`) and its scoring and test figures (:mod:`.score`).
- The online rewards of the GRPO family (:mod:`.online`): quality combined with DQO's
  or DARLING's diversity term over a group of samples.

Nothing is imported here, so a light module of the package loads no heavy library.
"""
