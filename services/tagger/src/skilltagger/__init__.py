"""skilltagger: the skill-tagging engine, backends, cache, gRPC server, client and CLI."""
