"""Reading the API's answers into a snapshot: both vocabularies, timestamps with any zone, bad entries."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from capella_deploy.live import parse_key, parse_model


def test_key_creation_times_keep_their_zone() -> None:
    base = {"keyId": "k", "name": "app", "expiry": 30, "allowedCIDRs": ["10.0.0.0/8"]}
    east = parse_key({**base, "audit": {"createdAt": "2026-01-01T10:00:00.123-05:00"}})
    utc = parse_key({**base, "audit": {"createdAt": "2026-01-01T15:00:00.123456789Z"}})
    assert east.created_at == datetime(2026, 1, 1, 15, 0, 0, 123000, tzinfo=timezone.utc)
    assert utc.created_at == datetime(2026, 1, 1, 15, 0, 0, 123456, tzinfo=timezone.utc)
    assert east.expires_at == east.created_at + timedelta(days=30)  # type: ignore[operator]
    assert parse_key({**base, "audit": {"createdAt": "yesterday"}}).created_at is None


def test_both_action_vocabularies_and_wrapped_items() -> None:
    seed = parse_model(
        {"model": {"id": "m", "name": "chat", "status": "healthy", "actions": ["pause", "destroy", "edit"]}}
    )
    spec = parse_model({"id": "m", "name": "chat", "status": "healthy", "actions": ["pause", "delete"]})
    assert seed.actions == {"pause", "delete", "edit"}
    assert spec.actions == {"pause", "delete"}
