"""The process around the client: signals, SIGTERM callbacks, interpreter exit, fork."""
