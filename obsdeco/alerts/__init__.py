"""Alerts: rules over what is stored, evaluated off the caller's thread, and their notifiers.

The modules: `rules` (the `Alert` model), `events` (a fired alert as stored and sent),
`budget_usage` (how budgets report their use and soft-limit warnings), `metrics` (a rule's
value from the store), `notify` (webhook, callable and log delivery), `evaluator` (the state
machine), `service` (the background thread, `check_alerts`, `get_alerts`) and `counters` (what
`obsdeco.stats()` reports of them). Nothing is imported here, so that storage can use `events`.
"""
