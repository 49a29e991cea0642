"""Where the response cache keeps responses: the shared types, the value format, the
write-behind layer, and one module per backend (memory, SQL database, Redis)."""
