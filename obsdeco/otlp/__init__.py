"""Export of obsdeco's records to other tools: OpenTelemetry (OTLP/HTTP) traces and metrics,
and the import of other instrumentations' GenAI spans (`obsdeco.otel`)."""
