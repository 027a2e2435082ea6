"""Model calls: tags -> (model, key) candidates, keys and budgets, the usage ledger, fallback and
the wait state, all through litellm (which loads only in the model worker process).

``types`` (ModelClient, Completion, Usage: the shapes of a call), ``client`` (one litellm call
through the worker; starting the worker early), ``model_process`` / ``model_worker`` /
``model_loop`` / ``litellm_call`` / ``litellm_direct`` / ``openai_body`` (the worker and its side of a
call; ``litellm_direct``: litellm's provider transformation without ``litellm.acompletion``),
``model_host`` (one process per user that keeps litellm loaded and forks each command's workers),
``streaming`` (a streamed answer's parts, coalesced to about 20 hand-overs a second),
``prompt_cache`` (cache_control breakpoints for the models that need them), ``images`` (tools' images
in a transcript: sent as image parts, or described to a model that takes none), ``prices`` (what a
call costs: per-token prices, cache reads and writes included),
``models_config`` (the ``models:`` config section), ``context`` (models' context windows and
token counts), ``defaults`` (the model a top agent gets when
none is named; the provider key variables), ``resolve`` (tag or name -> candidates), ``failures``
(what a provider error means), ``keys`` (key availability and budget windows), ``router`` (the
ModelClient over many keys), ``ledger`` (the usage ledger the router writes, as a protocol),
``recorded`` (the ledger kept for a client without keys: the demo's),
``clock`` (injectable time), ``providers`` (litellm's provider names, read without importing it),
``scripted`` (a deterministic in-process model answering from scripts: tests, benchmarks, the demo).
"""
