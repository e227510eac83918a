"""Rules: criteria and actions, on events and on timers."""
