"""feedengine: Kite Connect ticks to OHLC candles in PostgreSQL, fast and without loss."""

__version__ = "0.1.0"
