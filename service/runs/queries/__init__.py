"""Read models: every query the API, the web UI and the CLI run to show runs and candidates, in one place.

- `ownership`: a key sees only the runs it owns; another key's run is as absent as a missing one.
- `runs`: the run summary (`run_out`), the list of runs, what a run found.
- `stats`: per operator, model and island of a run.
- `candidates`: candidate lists and pages, a candidate in full with its lineage, the series the charts draw.
- `webhooks`: a run's deliveries and their attempts.
- `generations`: an es run's told generations, each one's fitness with its interval, sigma, learning rate and cost.
- `cost`: the environment steps and trainer seconds a candidate and a run consumed, by phase.
- `rows`: result rows into views in one validation, and a few rows as one JSON value beside other figures.

They return the views of `service.runs.views` (or rows and ORM objects for the UI's templates); the API's routes
and the UI's pages only shape them. The statements a read sends on every request are built once, their values
bound per call (building one cost more CPU than running it), and a column-only read goes to the session's
connection, past the ORM. A candidate that has finished is `Candidate.finished`; the score that counts
is `Candidate.counted_score`.
"""
