"""Discovery runs: the request shape, the orchestrator that moves a run, and the jobs it schedules."""
