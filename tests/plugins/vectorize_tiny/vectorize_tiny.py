"""A third-party encoder: character statistics, 4 dimensions. Shows the whole plugin contract."""

name = "tiny"
description = "test plugin: length, vowels, spaces, digits"
dimension = 4
metric = "l2"


def vector(text):
    return [len(text), sum(c in "aeiou" for c in text), text.count(" "), sum(c.isdigit() for c in text)]


def encode(batch):
    import os
    import time

    import numpy as np

    # Tests make encoding slow on purpose, to act while a run is under way.
    time.sleep(float(os.environ.get("VECTORIZE_TINY_DELAY", "0")))
    return np.array([vector(t) for t in batch], dtype=np.float32).reshape(len(batch), dimension)
