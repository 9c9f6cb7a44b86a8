"""Spec documents, fixtures and the runners that execute each scenario's transition.

``spec/changes/<change-id>/spec.md`` states the requirements with scenario ids; ``fixtures/`` holds one
input per scenario; :mod:`coordexp.spec.runners` maps a transition name to the function that runs a
fixture input through the real code and returns plain JSON data for a snapshot.
"""
