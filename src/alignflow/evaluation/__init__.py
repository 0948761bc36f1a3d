"""Statistics for comparing a base and a tuned model on held-out prompts."""
