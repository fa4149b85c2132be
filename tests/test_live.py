"""Reading the API's answers into a snapshot: both vocabularies, timestamps with any zone, bad entries."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from capella_deploy.kinds.api_key import parse_key
from capella_deploy.kinds.model import LiveModel, allows, parse_model


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


def test_key_expiry_is_a_number_of_days_read_as_the_lifetime_given() -> None:
    created = datetime(2026, 1, 1, tzinfo=timezone.utc)
    base = {"keyId": "k", "name": "app", "allowedCIDRs": ["10.0.0.0/8"], "audit": {"createdAt": "2026-01-01T00:00:00Z"}}
    now = created + timedelta(days=12, hours=6)
    assert parse_key({**base, "expiry": 30.5}).expiry_days == 30.5
    assert parse_key({**base, "expiry": 30}, now).expiry_days == 30  # as given at creation
    remaining = parse_key({**base, "expiry": 17.75}, now + timedelta(minutes=3))  # read a little before "now"
    assert remaining.expiry_days == 30 and remaining.expires_at == created + timedelta(days=30)
    assert parse_key({**base, "expiry": 17.6}, now).expiry_days == 17.6  # neither: taken as read
    for garbage in (True, "30", float("nan"), -1, 1e9):
        assert parse_key({**base, "expiry": garbage}).expiry_days is None


def test_what_a_model_allows_comes_from_its_actions_else_from_its_status() -> None:
    def model(status: str, actions: list[str] | None = None) -> LiveModel:
        return parse_model({"id": "m", "name": "chat", "status": status, "actions": actions})

    assert allows(model("healthy", ["pause", "destroy", "edit"]), "edit")
    assert not allows(model("healthy", ["destroy"]), "pause")  # the model says no, whatever its status
    assert allows(model("healthy", ["pause", "delete"]), "edit")  # the spec's list never names edits
    assert not allows(model("deploying", ["delete"]), "edit")
    assert allows(model("paused"), "resume") and not allows(model("pausing"), "resume")
    assert allows(model("paused", ["unknown-word"]), "edit")
