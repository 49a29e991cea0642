"""Privacy: what is stored of a call's content and metadata, scrubbed, filtered, encrypted."""
