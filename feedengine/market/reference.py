"""Reference data of the generated universe: plausible names, prices (rupees, early 2024),
tick sizes and contract sizes."""

__all__ = [
    "CURRENCIES",
    "CURRENCY_TICK",
    "EQUITY_TICK",
    "INDEX_FUTURES",
    "INDEX_TICK",
    "INDICES",
    "MCX_CONTRACTS",
    "MONTHS",
    "NCO_CONTRACTS",
    "NIFTY50",
]

#: Nifty 50 constituents with an approximate price, most liquid first.
NIFTY50: tuple[tuple[str, float], ...] = (
    ("RELIANCE", 2600),
    ("HDFCBANK", 1650),
    ("ICICIBANK", 1000),
    ("INFY", 1600),
    ("TCS", 3800),
    ("ITC", 465),
    ("SBIN", 640),
    ("LT", 3500),
    ("BHARTIARTL", 1050),
    ("KOTAKBANK", 1850),
    ("AXISBANK", 1120),
    ("HINDUNILVR", 2550),
    ("BAJFINANCE", 7300),
    ("ASIANPAINT", 3250),
    ("MARUTI", 10000),
    ("HCLTECH", 1550),
    ("SUNPHARMA", 1350),
    ("TITAN", 3800),
    ("ULTRACEMCO", 10000),
    ("WIPRO", 470),
    ("NTPC", 310),
    ("M&M", 1650),
    ("POWERGRID", 240),
    ("TATAMOTORS", 800),
    ("NESTLEIND", 2500),
    ("JSWSTEEL", 830),
    ("TATASTEEL", 135),
    ("ADANIENT", 3100),
    ("ADANIPORTS", 1150),
    ("ONGC", 230),
    ("COALINDIA", 380),
    ("BAJAJFINSV", 1650),
    ("HDFCLIFE", 630),
    ("GRASIM", 2100),
    ("TECHM", 1300),
    ("SBILIFE", 1450),
    ("BRITANNIA", 5000),
    ("INDUSINDBK", 1650),
    ("CIPLA", 1300),
    ("DRREDDY", 5800),
    ("EICHERMOT", 3900),
    ("DIVISLAB", 3700),
    ("APOLLOHOSP", 5900),
    ("HEROMOTOCO", 4400),
    ("BAJAJ-AUTO", 7000),
    ("BPCL", 470),
    ("HINDALCO", 570),
    ("TATACONSUM", 1150),
    ("UPL", 580),
    ("LTIM", 5800),
)
#: NSE indices with an approximate level.
INDICES: tuple[tuple[str, float], ...] = (
    ("NIFTY 50", 21700),
    ("NIFTY BANK", 47500),
    ("NIFTY FIN SERVICE", 21200),
    ("NIFTY IT", 37000),
    ("NIFTY MIDCAP 50", 13500),
    ("INDIA VIX", 14),
    ("NIFTY NEXT 50", 55000),
    ("NIFTY AUTO", 18800),
    ("NIFTY PHARMA", 17500),
    ("NIFTY FMCG", 56000),
    ("NIFTY METAL", 7900),
    ("NIFTY 100", 21900),
    ("NIFTY ENERGY", 35000),
    ("NIFTY REALTY", 850),
    ("NIFTY PSU BANK", 5900),
)
#: Index futures: underlying, index it tracks, lot size.
INDEX_FUTURES: tuple[tuple[str, str, int], ...] = (
    ("NIFTY", "NIFTY 50", 50),
    ("BANKNIFTY", "NIFTY BANK", 15),
    ("FINNIFTY", "NIFTY FIN SERVICE", 40),
)
#: Currency futures: pair, price (rupees), tick size 0.0025 rupee.
CURRENCIES: tuple[tuple[str, float], ...] = (
    ("USDINR", 83.1),
    ("EURINR", 90.9),
    ("GBPINR", 105.8),
    ("JPYINR", 56.4),
)
CURRENCY_TICK = 0.0025
#: MCX commodity futures: name, price (rupees), tick size (rupees).
MCX_CONTRACTS: tuple[tuple[str, float, float], ...] = (
    ("CRUDEOIL", 6000, 1.0),
    ("GOLD", 62500, 1.0),
    ("SILVER", 72000, 1.0),
    ("NATURALGAS", 220, 0.1),
    ("COPPER", 720, 0.05),
    ("ZINC", 225, 0.05),
    ("ALUMINIUM", 205, 0.05),
    ("LEAD", 185, 0.05),
    ("NICKEL", 1450, 0.1),
    ("GOLDM", 62400, 1.0),
    ("SILVERM", 71900, 1.0),
    ("CRUDEOILM", 6010, 1.0),
)
#: NSE commodity (NCO) futures: name, price, tick size; prices stay inside int32 at the
#: NCO divisor of 10 000.
NCO_CONTRACTS: tuple[tuple[str, float, float], ...] = (
    ("GOLDPETAL", 6250, 1.0),
    ("SILVERMIC", 71800, 1.0),
    ("GOLDGUINEA", 50200, 1.0),
    ("CRUDEOIL", 5990, 1.0),
    ("NATURALGAS", 221, 0.1),
    ("COPPER", 719, 0.05),
)
EQUITY_TICK = 0.05
INDEX_TICK = 0.05
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
