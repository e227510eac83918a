"""Intake: every way mail arrives, into the durable spool."""
