"""Place converted tensors in a module of the preset, built on the meta device: every input tensor must land on a
tensor of the module with the same shape, and every tensor of the module must be filled. Nothing is dropped: the
errors list every tensor concerned, under the name it has in the input file."""

from __future__ import annotations

from collections.abc import Callable, Collection

from mirage_env.models.weight_files import Shapes


class UnplacedTensorsError(ValueError):
    """Input tensors that have no place in the target module (unknown names, or two inputs for one place)."""


class MissingTensorsError(ValueError):
    """Tensors of the target module that no input tensor fills."""


class TensorShapeError(ValueError):
    """Input tensors whose shape differs from the one their place in the target module has."""


def place(what: str, found: Shapes, rename: Callable[[str], str | None], expected: Shapes,
          may_miss: Collection[str] = ()) -> dict[str, str]:
    """Map every name of ``found`` (an input's names and shapes) to a name of ``expected`` through ``rename``;
    returns {input name: target name}. Raises the errors above, naming ``what``; targets in ``may_miss`` may stay
    unfilled (the caller fills them and reports it)."""
    placed: dict[str, str] = {}
    taken: dict[str, str] = {}
    unplaced = []
    for name in sorted(found):
        target = rename(name)
        if target is None or target not in expected:
            unplaced.append(name if target is None else f"{name} (as {target})")
        elif target in taken:
            unplaced.append(f"{name} (as {target}, already filled by {taken[target]})")
        else:
            placed[name], taken[target] = target, name
    if unplaced:
        raise UnplacedTensorsError(f"{what}: {len(unplaced)} tensors have no place in the preset's model: "
                                   + ", ".join(unplaced))
    missing = sorted(expected.keys() - taken.keys() - set(may_miss))
    if missing:
        raise MissingTensorsError(f"{what}: {len(missing)} tensors of the preset's model are not in the input: "
                                  + ", ".join(missing))
    misshaped = [f"{name} {list(found[name])} (as {target} {list(expected[target])})"
                 for name, target in placed.items() if found[name] != expected[target]]
    if misshaped:
        raise TensorShapeError(f"{what}: {len(misshaped)} tensors differ in shape from the preset's model: "
                               + ", ".join(misshaped))
    return placed
