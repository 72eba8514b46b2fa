"""The simulator, apart from the code that serves users (production code never imports it):
``world`` (the data-generating process: traffic, labels, covariate shift, concept drift), ``faults``
(the catalogue of bad inputs), ``examples`` (the example model's simulated training data, reference and
first champion), ``bulk`` (simulated history bulk-loaded in ingest's shape, for benchmarks),
``decisions`` (the decision simulations: false promotions, power, rollbacks), ``demo`` (``make demo``).
Owns no table.
"""
