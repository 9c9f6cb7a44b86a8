"""The torch side of coordexp: losses, model loading, the packed forward and the learner.

This is one of the few packages allowed to import torch at module level. The submodules are not
imported here, so ``import coordexp.learn`` alone stays cheap; import what you need
(``from coordexp.learn.losses import token_ce``).
"""
