"""Honest quality figures: converters held out per conversion type (``split``), the encoder
retrained without them, and every audience strategy and baseline (``methods``) scored on them
(``metrics``: precision, recall, lift, AUC, gains, with bootstrap and paired intervals), written as
``evaluation.json``, ``evaluation.md`` and a gains plot (``report``); :func:`evaluate.evaluate`
runs it all.
"""
