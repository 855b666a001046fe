"""An application module that exists (so `pfm -t` accepts it) but raises when
imported: the worker must log that it failed to initialize, and its manager
must retry with a pause instead of spinning."""

raise RuntimeError("broken_app refuses to import")
