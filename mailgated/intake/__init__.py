"""Intake: every way mail arrives, into the durable spool (never the database).

Flow order: `spool` (the one door in), `identity` (Message-ID and content hash),
then the sources — `mda` (fetchmail / MTA pipe), `smtp` (SMTP and LMTP), `imap`,
`pop3`, `mbox` (bulk import).
"""
