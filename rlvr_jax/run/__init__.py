"""What every run command shares: user paths, the run directory (lock, status, resume check),
the health guard, the errors a user can act on, and the one run loop of every stage."""
