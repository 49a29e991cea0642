"""Analyzers: pure functions from call columns to report sections."""

from obsdeco.analyzers.cost_analyzer import PRICE_SNAPSHOT, PriceTable
from obsdeco.analyzers.report import build_report, price_calls, session_totals

__all__ = ["PRICE_SNAPSHOT", "PriceTable", "build_report", "price_calls", "session_totals"]
