"""One package per broker: its live source, decoder, instruments and local test server."""
