"""The FAISS similarity index of catalogue segments (a cache of PostgreSQL)."""
