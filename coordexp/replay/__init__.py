"""Offline replay of recorded rollouts and seed 000's diagnosis: ``python -m coordexp.replay --rollouts PATH``.

``formats`` reads a recording (coordexp's rollouts.jsonl, the legacy gt_vs_pred.jsonl, vLLM debug dumps,
monitor dumps), ``pipeline`` runs it through the training machine with the ``recorded`` backend,
``diagnosis`` turns the result into the runbook's figures, ``report`` writes them, ``cli`` is the command.
"""
