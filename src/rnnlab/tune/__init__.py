"""Tuning: each arm of a comparison tuned with the same budget (Optuna), so that a verdict is
not an artefact of one learning rate or initialisation.

``space`` reads a search space written in Hydra's override grammar; ``study`` runs the
studies as a Hydra sweep (conf/tune/ presets, ``make tune EXP=<preset>``), one concern per
module beside it (``arms``, ``store``, ``scoring``, ``parents``, ``resume``); ``expected`` is
the expected best validation score against the number of trials.
"""
