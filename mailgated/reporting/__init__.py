"""Reporting: statistics, their SQL, charts, filters, calendars and the HTTP feeds."""
