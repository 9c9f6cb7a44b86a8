"""coordexp: Stage-2 rollout-matching fine-tuning of coord-token VLM detectors.

The training step is an explicit state machine
``Schedule -> Rollout -> Parse -> Match -> BuildTarget -> Pack -> Learn -> Log``.
Pure transitions live in :mod:`coordexp.core`; everything impure goes through the executor.
"""

__version__ = "0.1.0"
