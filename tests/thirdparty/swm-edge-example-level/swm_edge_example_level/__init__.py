"""A tiny third-party swm-edge driver: an ASCII level sensor on a serial line."""

from swm_edge_example_level.driver import LevelDevice, LevelDriver

__all__ = ["LevelDevice", "LevelDriver"]
