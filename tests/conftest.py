"""Suite-wide settings.

The tiny models are far faster on one intra-op thread than on several fighting over two cores, and one
fixed thread count keeps float reductions (and so snapshot digests and loss equalities) identical from
run to run. Set before any test imports torch; subprocesses inherit it.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
