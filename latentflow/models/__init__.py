"""Model families, one per module. Import through ``latentflow`` or ``latentflow.auto``."""
