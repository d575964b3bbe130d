"""Container lifecycle and the state store."""
