"""skilldistill distillation library: generation engines, answer judging and student profiling."""
