"""Benchmark tooling for Echoledger (evaluation corpus, measurements)."""
