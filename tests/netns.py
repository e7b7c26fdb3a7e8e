"""Network namespaces for tests: the lab's (:mod:`lab.netns`), which the tests share."""

from lab.netns import Namespaces, kernel_supports

__all__ = ["Namespaces", "kernel_supports"]
