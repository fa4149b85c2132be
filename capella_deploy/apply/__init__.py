"""Carrying out a plan: the scheduler, dependency waits and the status watcher."""
