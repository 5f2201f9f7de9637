"""Sessions: the key that decides who may be offered one, the verification settings it is bound
to, the cached record, the stores, and export/import."""
