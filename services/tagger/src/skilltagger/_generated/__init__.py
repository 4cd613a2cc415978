"""Generated gRPC stubs (python -m skilltagger.protos_gen); do not edit."""
