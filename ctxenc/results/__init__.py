"""Long-format records and everything derived from them: tables, plots, the report."""
