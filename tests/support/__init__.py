"""Support code for the tests, not tests: TLS servers (``servers``), real servers
(``realservers``), the fault proxy (``faultproxy``) and small shared helpers (``helpers``)."""
