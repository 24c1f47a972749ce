"""One readable PyMC model per question; derived quantities live beside their model."""
