"""Measurements of data and targets that scripts print and tests check: line resolution per long side
(:mod:`.resolution`) and the ceiling of the training targets (:mod:`.ceiling`)."""
