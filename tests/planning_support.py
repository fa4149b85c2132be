"""Builders for planner tests: a manifest document and live resources as the API would report them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from capella_deploy.kinds.api_key import LiveKey
from capella_deploy.kinds.model import LiveModel
from capella_deploy.manifest import Manifest

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
CHAT = {"name": "chat", "catalogModel": "mistralai/mistral-7b-instruct-v0.3", "gpuMemory": 48}
APP = {"name": "app", "expiryDays": 180, "allowedCIDRs": ["10.0.0.0/16"]}


def manifest(**overrides: Any) -> Manifest:
    doc: dict[str, Any] = {
        "apiVersion": "capella-deploy/v1",
        "defaults": {"provider": "aws", "region": "us-east-1"},
        "models": [CHAT],
        "apiKeys": [APP],
    }
    doc.update(overrides)
    return Manifest.model_validate(doc)


def live_model(**overrides: Any) -> LiveModel:
    """A healthy live model that matches ``CHAT`` under the default manifest."""
    fields: dict[str, Any] = {
        "id": "m-1",
        "name": "chat",
        "status": "healthy",
        "actions": frozenset({"pause", "delete", "edit"}),
        "provider": "aws",
        "region": "us-east-1",
        "cpu": 4,
        "gpu_memory": 48,
        "catalog_model": "mistralai/mistral-7b-instruct-v0.3",
        "model_type": "text-generation",
        "vendor": "mistral",
        "dimensions": None,
        "quantization": None,
        "optimization": None,
        "caching": None,
        "enable_batching": None,
        "keyword_filtering": None,
        "connection_string": "https://m-1.ai.couchbase.com",
        "version": 1,
    }
    fields.update(overrides)
    return LiveModel(**fields)


def live_key(**overrides: Any) -> LiveKey:
    """A live key, ten days old, that matches ``APP`` under the default manifest."""
    fields: dict[str, Any] = {
        "id": "k-1",
        "name": "app",
        "description": None,
        "region": "us-east-1",
        "expiry_days": 180,
        "allowed_cidrs": ("10.0.0.0/16",),
        "allowed_models": (("*", "*"),),
        "created_at": NOW - timedelta(days=10),
    }
    fields.update(overrides)
    return LiveKey(**fields)
