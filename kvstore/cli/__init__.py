"""Command-line entry points: `kvstore` (the server) and `kvctl` (the client CLI)."""
