"""Onboarding a model from its endpoint: querying it, grading its answers, caching them."""
