"""Model calls: tags -> (model, key) candidates, keys and budgets, the usage ledger, fallback and
the wait state, all through litellm.

``client`` (the ModelClient seam and one litellm call), ``models_config`` (the ``models:`` config
section), ``resolve`` (tag or name -> candidates), ``failures`` (what a provider error means),
``keys`` (key availability and budget windows), ``router`` (the ModelClient over many keys),
``clock`` (injectable time), ``providers`` (litellm's provider names, read without importing it),
``scripted`` (a deterministic in-process model answering from scripts: tests, benchmarks, demos).
"""
