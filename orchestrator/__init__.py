"""Ray-based experiment orchestrator for edge-AI research: one YAML -> one tracked Ray run."""
__version__ = "0.1.0"
