"""End-to-end and fault tests of whole discovery runs."""
