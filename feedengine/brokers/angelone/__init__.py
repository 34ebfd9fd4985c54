"""Angel One SmartAPI WebSocket 2.0: login, stream, live source, scrip master, local server."""
