"""Outbound: compose, queue and send the mail we write."""
