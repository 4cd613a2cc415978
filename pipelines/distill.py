"""End-to-end skill-aware distillation pipeline (placeholder until the stages land)."""
