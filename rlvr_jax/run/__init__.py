"""What every run command shares: user paths, the run directory (lock, status, resume check),
the health guard and the errors a user can act on."""
