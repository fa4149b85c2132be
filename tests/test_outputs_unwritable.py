"""An outputs file that cannot be written stops apply before anything is created: a token would have nowhere to go."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import World

MANIFEST = """\
apiVersion: capella-deploy/v1
defaults: {provider: aws, region: us-east-1}
models:
  - {name: chat, catalogModel: mistralai/mistral-7b-instruct-v0.3, gpuMemory: 48}
apiKeys:
  - {name: app, expiryDays: 90, allowedCIDRs: [10.0.0.0/16]}
"""


def apply_with_outputs(world: World, outputs: Path) -> tuple[int, str, str]:
    path = world.write("capella.yaml", MANIFEST)
    result = world.run(
        "apply", "-f", str(path), "--auto-approve", f"--sandbox={world.state}", "--outputs", str(outputs)
    )
    return result.exit_code, result.stdout, result.stderr


def test_apply_creates_nothing_when_the_outputs_directory_cannot_be_made(world: World) -> None:
    blocker = world.root / "not-a-directory"
    blocker.write_text("a file where the outputs directory should be\n")
    code, stdout, stderr = apply_with_outputs(world, blocker / "outputs.json")
    assert code == 1
    assert str(blocker) in stderr and "Error" in stderr
    assert "Traceback" not in stdout + stderr
    state = world.sandbox.world()
    assert state.models == {} and state.api_keys == {}, "nothing was created"
    assert blocker.read_text() == "a file where the outputs directory should be\n"


def test_apply_creates_nothing_when_the_outputs_path_is_a_directory(world: World) -> None:
    directory = world.root / "outputs.json"
    directory.mkdir()
    code, _, stderr = apply_with_outputs(world, directory)
    assert code == 1 and str(directory) in stderr
    state = world.sandbox.world()
    assert state.models == {} and state.api_keys == {}
