"""Actors are made of components, not of mixin chains: every actor class of the code base is
at most two levels above ``Actor`` (``LocalCsms -> TreeActor -> Actor``)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import actors
from actors.runtime.actor import Actor


def actor_classes() -> list[type[Actor]]:
    for info in pkgutil.walk_packages(actors.__path__, "actors."):
        importlib.import_module(info.name)
    found, todo = [], [Actor]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("actors."):
                found.append(sub)
    return sorted(set(found), key=lambda c: f"{c.__module__}.{c.__qualname__}")


CLASSES = actor_classes()


def test_the_actors_are_all_found() -> None:
    names = {c.__name__ for c in CLASSES}
    assert {"ChargingStation", "LocalCsms", "CloudCsms", "ResourceManager"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__qualname__)
def test_no_actor_class_is_more_than_two_levels_above_actor(cls: type[Actor]) -> None:
    levels = cls.__mro__.index(Actor)
    assert levels <= 2, f"{cls.__qualname__} inherits through {cls.__mro__[:levels]}"
    assert all(issubclass(base, Actor) for base in cls.__mro__[:levels]), (
        f"{cls.__qualname__} mixes in {[b for b in cls.__mro__[:levels] if not issubclass(b, Actor)]}")
