"""Session engines: how a session is offered to a new connection and captured from it, the
libssl binding behind the native engine, and the choice between engines."""
