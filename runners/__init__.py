"""Model runners: the contract, image preparers, model families, backends and fabrication."""
