"""Model registry: release gates, the served pyfunc model, model cards, lineage and champion re-evaluation.

The register stage (alignflow.stages.register) decides with `gates.check_gates` whether a tuned model may
be registered, records the decision either way, and keeps the `candidate` and `champion` aliases.
"""
