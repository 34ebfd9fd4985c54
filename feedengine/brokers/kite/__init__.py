"""Zerodha's Kite Connect: its WebSocket wire, live stream, instruments, history and local
server. Nothing outside this package reads Kite's wire."""
