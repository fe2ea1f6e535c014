"""Honest quality figures: converters held out per conversion type, the encoder retrained without
them, and every audience strategy compared with random, most-active, raw-feature kNN and propensity
baselines on them, with bootstrap and paired intervals (``evaluate``).
"""
