"""Declarative provisioning for Couchbase Capella AI Services."""

__version__ = "0.1.0"
