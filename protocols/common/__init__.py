"""What every protocol shares: the domain model, typed errors and the sans-IO session interface."""
