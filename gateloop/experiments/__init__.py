"""The paper's experiments on the shared trainer: run configs and presets, one run of a task
(``memory_horizon``, ``language_model``) and each experiment end to end with its tables and
figures (``memory_horizon_report``, ``language_model_report``)."""
