"""Demo and test fixtures: real example models and data sets that ship offline. Never imported by converters."""
