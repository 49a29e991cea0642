"""Alerts: rules over what is stored, evaluated off the caller's thread, and their notifiers.

The modules: `rules` (the `Alert` model), `events` (a fired alert as stored and sent),
`budget_usage` (the hook budgets report their use through), `metrics` (a rule's value from the
store), `notify` (webhook, callable and log delivery), `evaluator` (the state machine and the
background thread) and `counters` (what `obsdeco.stats()` reports of them).
"""
