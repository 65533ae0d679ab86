"""Backtests: replay a stream through the same controller code the daemon runs, on a simulated clock.

``streams.py`` builds streams (synthetic scenarios with known change points, Elec2, a user's file); ``replay.py``
drives ``Controller.tick(now)`` over them with an in-process store and a throwaway MLflow store; ``report.py`` turns
a :class:`~controller.backtest.result.BacktestResult` into a Markdown summary and a PNG plot.
"""
