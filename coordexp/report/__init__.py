"""Reports read in a browser: the run report (``python -m coordexp.report RUN_DIR``) and its shared parts.

``coordexp.report.page`` writes a self-contained HTML page and ``coordexp.report.overlay`` draws GT
against prediction sets on an image; the replay diagnosis and the rollout bench reuse both.
"""
