"""`grid sim`: many simulated agents in one process (engine, heartbeat scheduler, consumers)."""
