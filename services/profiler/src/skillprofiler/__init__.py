"""skilldistill student-profiling service (BentoML)."""
