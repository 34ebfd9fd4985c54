"""Angel One SmartAPI WebSocket 2.0: its wire (decoder, reference decoder, encoder)."""
